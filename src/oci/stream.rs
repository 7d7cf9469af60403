//! Which output stream of a process: a container's output is read by the sandbox and logged by
//! progress under the same word, so neither translates the other's.

/// Which output stream of a process a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}
