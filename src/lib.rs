//! rbuild: a daemonless, rootless Dockerfile builder in one binary.
//!
//! Data flows one way (DESIGN.md section 1):
//!
//! ```text
//! cli ──> frontend ──> solver ──> ops ──> exporter
//!          │  (Dockerfile → Graph)   │  (exec, copy, sources)
//!          dockerfile               store (blobs, snapshots, SQLite), snapshot, context
//! ```
//!
//! - [`cli`] parses arguments into validated options and is the only module that joins the
//!   stages of a build.
//! - [`dockerfile`] turns bytes into instructions with spans; [`dockerfile::shell`] expands words.
//!   Pure, no I/O.
//! - [`frontend`] lowers instructions to a [`graph::Graph`] and the target's image config.
//! - [`graph`] is plain data: vertices, ops, digests.
//! - [`solver`] schedules the graph: cache keys, lookups, parallel runs, cancellation.
//! - [`ops`] run one vertex each (base images, context files, file changes).
//! - [`store`] owns the state directory: blobs, snapshots, the SQLite database, locks, du, prune.
//! - [`registry`] talks to OCI registries: resolve, pull blobs (mirrors, auth, retries).
//! - [`remote_cache`] shares the build cache between machines: `--cache-to`, `--cache-from`.
//! - [`sandbox`] runs a RUN step in a rootless container (user namespace, overlay, libcontainer).
//! - [`ssh_agent`] is the host side of `RUN --mount=type=ssh`: rbuild's own SSH agent on a socket
//!   the sandbox mounts, serving key files or relaying list and sign to the user's agent.
//! - [`snapshot`] reads and writes layers (tar in and out, merged views, flattening).
//! - [`context`] selects and hashes build context files, with `.dockerignore` rules.
//! - [`exporter`] writes OCI layouts, docker archives, root filesystem tars and directories.
//! - [`progress`] renders events; no other module writes to the terminal.
//!
//! `tests/architecture.rs` keeps the dependency directions true.

// Tests write their fixtures directly; clippy.toml's rule is for what rbuild itself writes.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

/// `eprintln!` that cannot panic: with stderr closed (`2>&-`, or its reader gone, as under
/// `| head`) the message is lost and the exit code still tells the outcome. `eprintln!` panics on
/// a failed write, which turned a finished build into exit 101. In scope in every module
/// declared below it.
macro_rules! message {
    ($($argument:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($argument)*);
    }};
}

#[allow(clippy::print_stdout, clippy::print_stderr)] // the terminal is `cli`'s (data on stdout, messages on stderr) and `progress`'s
pub mod cli;
pub mod context;
pub mod dockerfile;
pub(crate) mod exporter;
pub(crate) mod frontend;
pub(crate) mod graph;
pub mod oci;
#[allow(clippy::disallowed_methods)] // writes a step's own trees (MKFILE into a layer being made)
pub(crate) mod ops;
#[allow(clippy::print_stdout, clippy::print_stderr)] // renders the build on the terminal
pub(crate) mod progress;
pub mod registry;
pub(crate) mod remote_cache;
#[allow(clippy::disallowed_methods)] // writes a container's files and its private directory
pub mod sandbox;
#[allow(clippy::disallowed_methods)] // writes layers being made, in its own directories
pub mod snapshot;
pub(crate) mod solver;
pub(crate) mod ssh_agent;
pub mod store;
