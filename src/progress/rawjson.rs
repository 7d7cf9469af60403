//! The rawjson printer: one JSON object per line per event, shaped like BuildKit's
//! `client.SolveStatus` as `--progress=rawjson` prints it, so tools that read BuildKit's stream
//! read ours:
//!
//! ```text
//! {"vertexes":[{"digest":"sha256:00..03","name":"[2/2] RUN make","started":"2024-05-01T10:00:00.5Z"}]}
//! {"logs":[{"vertex":"sha256:00..03","stream":1,"data":"aGkK","timestamp":"2024-05-01T10:00:00.8Z"}]}
//! {"statuses":[{"id":"sha256:ab..","vertex":"sha256:00..01","total":3400000,"current":1200000,"timestamp":"...","started":"..."}]}
//! {"warnings":[{"short":"V0FSTg=="}]}
//! ```
//!
//! Field names, their order and which are omitted when empty follow BuildKit's JSON tags; byte
//! fields (`data`, `short`) are base64 as Go encodes `[]byte`; times are RFC 3339 in UTC with
//! nanoseconds. A vertex object always carries everything known about the vertex, as BuildKit
//! resends whole vertices.
//!
//! Digests and inputs: the solver announces the graph first ([`Event::Defined`]), printed as one
//! object listing every vertex with its digest (the graph vertex's content-addressed digest,
//! stable across runs) and `inputs` (the digests of the vertices it depends on, each listed in
//! the same object), as BuildKit announces its LLB vertices; every later object of that vertex
//! carries the same digest and inputs, so a reader can rebuild the graph from the stream. The
//! vertices outside the graph (`[internal] load build definition`, metadata, `.dockerignore`,
//! exporters) have no inputs, and their digest is the sha256 of their name: stable across runs,
//! distinct per vertex, like BuildKit's digests of its own internal requests.

use std::io::{self, Write};

use serde::Serialize;

use super::trace::Trace;
use super::{Event, Printer, Stream, Timestamp, VertexId, format_rfc3339};
use crate::oci::{Digest, DigestHasher};

/// BuildKit's suffix for a canceled vertex's error; readers test for it.
const CANCELED: &str = "context canceled";

pub(crate) struct RawJsonPrinter {
    out: Box<dyn Write + Send>,
    trace: Trace,
}

#[derive(Serialize, Default)]
struct SolveStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<JsonVertex>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<JsonLog>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<JsonWarning>,
}

#[derive(Serialize)]
struct JsonVertex {
    digest: Digest,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<Digest>,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    cached: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Serialize)]
struct JsonStatus {
    id: String,
    vertex: Digest,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    current: u64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
}

#[derive(Serialize)]
struct JsonLog {
    vertex: Digest,
    stream: u8,
    data: String,
    timestamp: String,
}

#[derive(Serialize)]
struct JsonWarning {
    short: String,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// The digest of a vertex outside the graph: its name's, domain-separated from graph digests.
fn name_digest(name: &str) -> Digest {
    let mut hasher = DigestHasher::sha256();
    hasher.update(b"rbuild.progress.vertex.v1\0");
    hasher.update(name.as_bytes());
    hasher.finish()
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let value = chunk.iter().enumerate().fold(0u32, |value, (index, &byte)| value | u32::from(byte) << (16 - 8 * index));
        for position in 0..4 {
            if position <= chunk.len() {
                text.push(char::from(ALPHABET[(value >> (18 - 6 * position) & 0x3f) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    text
}

impl RawJsonPrinter {
    pub(crate) fn new(out: Box<dyn Write + Send>) -> RawJsonPrinter {
        RawJsonPrinter { out, trace: Trace::default() }
    }

    /// The digest and inputs of vertex `id`, named `name`.
    fn identity(&self, id: VertexId, name: &str) -> (Digest, Vec<Digest>) {
        match self.trace.definition(id) {
            Some(definition) => (definition.digest.clone(), definition.inputs.clone()),
            None => (name_digest(name), Vec::new()),
        }
    }

    /// The object for `event`, once the trace has recorded it.
    fn status_for(&mut self, event: Event, now: Timestamp) -> Option<SolveStatus> {
        if let Event::Defined { vertices } = &event {
            let vertexes = vertices
                .iter()
                .map(|definition| JsonVertex {
                    digest: definition.digest.clone(),
                    inputs: definition.inputs.clone(),
                    name: definition.name.clone(),
                    started: None,
                    completed: None,
                    cached: false,
                    error: String::new(),
                })
                .collect();
            self.trace.record(&event, now);
            return Some(SolveStatus { vertexes, ..SolveStatus::default() });
        }
        if let Event::Warning { message } = event {
            let short = base64(message.as_bytes());
            return Some(SolveStatus { warnings: vec![JsonWarning { short }], ..SolveStatus::default() });
        }
        let slot = self.trace.record(&event, now)?;
        let vertex = &self.trace.vertices[slot];
        let id = event.vertex()?;
        let (digest, inputs) = self.identity(id, &vertex.name);
        let status = match event {
            Event::Log { stream, bytes, .. } => SolveStatus {
                logs: vec![JsonLog {
                    vertex: digest,
                    stream: match stream {
                        Stream::Stdout => 1,
                        Stream::Stderr => 2,
                    },
                    data: base64(&bytes),
                    timestamp: format_rfc3339(now),
                }],
                ..SolveStatus::default()
            },
            Event::Status { id: status_id, .. } => {
                let status = vertex.statuses.iter().find(|status| status.id == status_id)?;
                SolveStatus {
                    statuses: vec![JsonStatus {
                        id: status_id,
                        vertex: digest,
                        total: status.total.unwrap_or(0),
                        current: status.current,
                        timestamp: format_rfc3339(status.timestamp),
                        started: Some(format_rfc3339(status.started)),
                        completed: status.completed.map(format_rfc3339),
                    }],
                    ..SolveStatus::default()
                }
            }
            Event::Started { .. } | Event::Cached { .. } | Event::Finished { .. } | Event::Failed { .. } | Event::Canceled { .. } => {
                let run = vertex.intervals.last();
                let error = match &vertex.error {
                    _ if vertex.canceled => CANCELED.to_owned(),
                    Some(error) => error.clone(),
                    None => String::new(),
                };
                SolveStatus {
                    vertexes: vec![JsonVertex {
                        digest,
                        inputs,
                        name: vertex.name.clone(),
                        started: run.map(|run| format_rfc3339(run.start)),
                        completed: run.and_then(|run| run.stop).map(format_rfc3339),
                        cached: vertex.cached,
                        error,
                    }],
                    ..SolveStatus::default()
                }
            }
            Event::Warning { .. } | Event::Defined { .. } => return None,
        };
        Some(status)
    }
}

impl Printer for RawJsonPrinter {
    fn event(&mut self, event: Event, now: Timestamp) -> io::Result<()> {
        let Some(status) = self.status_for(event, now) else {
            return Ok(());
        };
        serde_json::to_writer(&mut self.out, &status)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    fn tick(&mut self, _now: Timestamp) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self, _now: Timestamp, _build_failed: bool) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Definition;
    use super::super::test_support::SharedBuffer;
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    fn render(script: Vec<(u64, Event)>) -> Vec<Value> {
        let buffer = SharedBuffer::default();
        let mut printer = RawJsonPrinter::new(Box::new(buffer.clone()));
        let start = Duration::from_secs(1_714_557_600);
        for (millis, event) in script {
            printer.event(event, start + Duration::from_millis(millis)).unwrap();
        }
        printer.finish(start, true).unwrap();
        buffer.text().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hi\n\xff"), "aGkK/w==");
    }

    #[test]
    fn every_event_is_one_json_line_in_buildkit_shape() {
        let digest3 = Digest::parse(&format!("sha256:{}", "3".repeat(64))).unwrap();
        let digest4 = Digest::parse(&format!("sha256:{}", "4".repeat(64))).unwrap();
        let lines = render(vec![
            (
                0,
                Event::Defined {
                    vertices: vec![
                        Definition { vertex: 4, name: "[1/2] FROM alpine".into(), digest: digest4.clone(), inputs: vec![] },
                        Definition { vertex: 3, name: "[2/2] RUN make".into(), digest: digest3.clone(), inputs: vec![digest4.clone()] },
                    ],
                },
            ),
            (0, Event::Started { vertex: 3, name: "[2/2] RUN make".into() }),
            (300, Event::Log { vertex: 3, stream: Stream::Stderr, bytes: b"hi\n".to_vec() }),
            (400, Event::Status { vertex: 3, id: "sha256:ab".into(), current: 1_200_000, total: Some(3_400_000), done: false }),
            (500, Event::Status { vertex: 3, id: "sha256:ab".into(), current: 3_400_000, total: Some(3_400_000), done: true }),
            (600, Event::Finished { vertex: 3 }),
            (700, Event::Cached { vertex: 4, name: "[1/2] FROM alpine".into() }),
            (800, Event::Started { vertex: 5, name: "[b 1/1] RUN x".into() }),
            (900, Event::Canceled { vertex: 5 }),
            // Never started: no name to show, so nothing is printed.
            (900, Event::Failed { vertex: 6, error: "boom".into() }),
            (900, Event::Warning { message: "W: careful".into() }),
        ]);
        // Vertex 5 was never announced: its digest is its name's.
        let digest5 = name_digest("[b 1/1] RUN x");
        assert_eq!(
            lines,
            vec![
                json!({"vertexes": [{"digest": digest4, "name": "[1/2] FROM alpine"},
                    {"digest": digest3, "inputs": [digest4], "name": "[2/2] RUN make"}]}),
                json!({"vertexes": [{"digest": digest3, "inputs": [digest4], "name": "[2/2] RUN make", "started": "2024-05-01T10:00:00Z"}]}),
                json!({"logs": [{"vertex": digest3, "stream": 2, "data": "aGkK", "timestamp": "2024-05-01T10:00:00.3Z"}]}),
                json!({"statuses": [{"id": "sha256:ab", "vertex": digest3, "total": 3_400_000, "current": 1_200_000,
                    "timestamp": "2024-05-01T10:00:00.4Z", "started": "2024-05-01T10:00:00.4Z"}]}),
                json!({"statuses": [{"id": "sha256:ab", "vertex": digest3, "total": 3_400_000, "current": 3_400_000,
                    "timestamp": "2024-05-01T10:00:00.5Z", "started": "2024-05-01T10:00:00.4Z",
                    "completed": "2024-05-01T10:00:00.5Z"}]}),
                json!({"vertexes": [{"digest": digest3, "inputs": [digest4], "name": "[2/2] RUN make", "started": "2024-05-01T10:00:00Z",
                    "completed": "2024-05-01T10:00:00.6Z"}]}),
                json!({"vertexes": [{"digest": digest4, "name": "[1/2] FROM alpine", "started": "2024-05-01T10:00:00.7Z",
                    "completed": "2024-05-01T10:00:00.7Z", "cached": true}]}),
                json!({"vertexes": [{"digest": digest5, "name": "[b 1/1] RUN x", "started": "2024-05-01T10:00:00.8Z"}]}),
                json!({"vertexes": [{"digest": digest5, "name": "[b 1/1] RUN x", "started": "2024-05-01T10:00:00.8Z",
                    "completed": "2024-05-01T10:00:00.9Z", "error": "context canceled"}]}),
                json!({"warnings": [{"short": base64(b"W: careful")}]}),
            ]
        );
    }

    #[test]
    fn digests_of_vertices_outside_the_graph_are_stable_and_distinct() {
        let digest = name_digest("[internal] load build definition from Dockerfile");
        assert_eq!(digest, name_digest("[internal] load build definition from Dockerfile"));
        assert_ne!(digest, name_digest("[internal] load .dockerignore"));
        assert_eq!(digest.algorithm(), "sha256");
    }

    #[test]
    fn fields_come_in_buildkit_order() {
        let buffer = SharedBuffer::default();
        let mut printer = RawJsonPrinter::new(Box::new(buffer.clone()));
        let started = Event::Started { vertex: 1, name: "[1/1] RUN x".into() };
        printer.event(started, Duration::ZERO).unwrap();
        let status = Event::Status { vertex: 1, id: "x".into(), current: 0, total: None, done: true };
        printer.event(status, Duration::from_millis(1500)).unwrap();
        let digest = name_digest("[1/1] RUN x");
        assert_eq!(
            buffer.text(),
            format!(
                "{{\"vertexes\":[{{\"digest\":\"{digest}\",\"name\":\"[1/1] RUN x\",\
                 \"started\":\"1970-01-01T00:00:00Z\"}}]}}\n\
                 {{\"statuses\":[{{\"id\":\"x\",\"vertex\":\"{digest}\",\"current\":0,\
                 \"timestamp\":\"1970-01-01T00:00:01.5Z\",\"started\":\"1970-01-01T00:00:01.5Z\",\
                 \"completed\":\"1970-01-01T00:00:01.5Z\"}}]}}\n"
            )
        );
    }
}
