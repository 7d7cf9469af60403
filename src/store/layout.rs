//! The directories of the state root, as one enum: every path under the root is named here,
//! so a new area cannot be invented in passing by a `root.join("...")` somewhere else.
//!
//! ```text
//! CACHEDIR.TAG           marks the root as a cache (backup tools skip it)
//! lock, lock.gate        the root's locks (see `Store::open`)
//! db-v1.sqlite           cache records, layers, blobs (see `database`)
//! file-hashes-v1         remembered digests of context files (see `file_hashes`)
//! seccomp-filter-v1      the RUN steps' seccomp filter, compiled (see `sandbox::KeptFilter`)
//! blobs-v1/sha256/<hex>  compressed layers, configs, manifests          Area::Blobs
//! snapshots-v1/<hex>/    unpacked layers in overlay format, by diff id   Area::Snapshots
//! mounts-v1/<hex>/       RUN --mount=type=cache directories             Area::Mounts
//! git-v1/<hex>/          shared bare git repositories, one per remote    Area::GitRepositories
//! tmp/                   work in progress, renamed into place            Area::Tmp
//! ```
//!
//! The `-v1` suffixes version the formats: a layout change gets a new name and leaves the old
//! one to `prune`.

use std::path::{Path, PathBuf};

/// A directory of the state root that holds entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Content-addressed blobs, `sha256/<hex>`.
    Blobs,
    /// Unpacked layers, `<diff id hex>/`.
    Snapshots,
    /// Cache mounts: `<hex>/`, `<hex>.id`, `<hex>.lock`.
    Mounts,
    /// Bare git repositories for `ADD <git URL>`: `<hex>/`, `<hex>.url`, `<hex>.lock`.
    GitRepositories,
    /// Work in progress.
    Tmp,
}

impl Area {
    pub const ALL: [Area; 5] = [Area::Blobs, Area::Snapshots, Area::Mounts, Area::GitRepositories, Area::Tmp];

    /// Its path relative to the root.
    pub fn relative(self) -> &'static str {
        match self {
            Area::Blobs => "blobs-v1/sha256",
            Area::Snapshots => "snapshots-v1",
            Area::Mounts => "mounts-v1",
            Area::GitRepositories => "git-v1",
            Area::Tmp => "tmp",
        }
    }

    pub fn under(self, root: &Path) -> PathBuf {
        root.join(self.relative())
    }
}

/// The files at the top of the root.
pub const CACHEDIR_TAG_FILE: &str = "CACHEDIR.TAG";
pub const LOCK_FILE: &str = "lock";
pub const GATE_FILE: &str = "lock.gate";
pub const DATABASE_FILE: &str = "db-v1.sqlite";
pub const FILE_HASHES_FILE: &str = "file-hashes-v1";
pub const SECCOMP_FILTER_FILE: &str = "seccomp-filter-v1";
