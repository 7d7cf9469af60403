//! The closed set of operations a vertex can apply, and their canonical definitions.
//!
//! An op's [`Op::definition`] is canonical JSON of the op (field order fixed by the types), the
//! part of a vertex digest and of a cache key that the op itself contributes. Everything in an op
//! is already expanded (ARGs, WORKDIR-relative paths), so equal definitions mean equal work.

use std::path::PathBuf;

use serde::Serialize;

use crate::oci::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    /// The empty filesystem.
    Scratch,
    /// A base image's layers.
    Image(ImageSource),
    /// A build context directory: the main one or a named `--build-context`. Its output is a
    /// handle on the directory; the files a `COPY` uses are selected and hashed by that `COPY`.
    Context(ContextSource),
    /// File changes on top of input 0: copy, mkdir, mkfile. Produces one new layer.
    File { actions: Vec<FileAction> },
    /// The layers of every input, stacked in order (`COPY --link`).
    Merge,
    /// A command in a container on input 0 (`RUN`). Produces one new layer: the diff.
    Exec(ExecOp),
    /// A file downloaded from an http(s) URL (`ADD <url>`): one layer holding `/<filename>`.
    Http(HttpSource),
    /// A commit's tree (or one directory of it) from a git remote (`ADD <git URL>`): one layer.
    Git(GitSource),
}

impl Op {
    /// Canonical JSON of the op.
    pub(crate) fn definition(&self) -> String {
        // Serializing plain data (strings, numbers, paths, enums) to a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Scratch => "scratch",
            Op::Image(_) => "image",
            Op::Context(_) => "context",
            Op::File { .. } => "file",
            Op::Merge => "merge",
            Op::Exec(_) => "exec",
            Op::Http(_) => "http",
            Op::Git(_) => "git",
        }
    }
}

/// `ADD <url>`'s download, as BuildKit's http source: the file is `/<filename>`, mode 0600,
/// owned by 0:0, with the mtime of the response's `Last-Modified` (else the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct HttpSource {
    pub url: String,
    /// The last component of the URL's path, `__unnamed__` when it has none.
    pub filename: String,
    /// `--checksum`: the content's digest must be this.
    pub checksum: Option<String>,
}

/// `ADD <git URL>`'s checkout, as BuildKit's git source: the files of one commit's tree (or of
/// `subdir` in it) with the modes git stores (0644, 0755, symlinks), owned by 0:0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GitSource {
    /// The remote as written, without the fragment (`git://host/repo.git`, `git@host:repo.git`).
    pub remote: String,
    /// `#REF`: a branch, a tag or a full commit id; empty for the remote's default branch.
    pub reference: String,
    /// `#REF:SUBDIR`, cleaned and relative (`a/b`); empty for the whole tree.
    pub subdir: String,
    /// `--keep-git-dir`: a `.git` directory beside the files.
    pub keep_git_dir: bool,
    /// `--checksum`: the commit id (or the annotated tag's id) must start with this.
    pub checksum: Option<String>,
    /// SOURCE_DATE_EPOCH, the files' mtime; without it, the commit's time.
    pub timestamp: Option<i64>,
}

/// A `RUN` step. Everything here is in the cache key but `proxy_env` (BuildKit keeps proxy
/// settings out of keys and images).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ExecOp {
    pub args: Vec<String>,
    /// The process environment, `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    /// USER as written (`name`, `uid`, `name:group`), resolved in the container.
    pub user: String,
    pub hostname: String,
    /// `--add-host` entries (name, address), appended to the step's /etc/hosts. Left out of
    /// the key when empty, so keys made before the flag existed stay valid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, String)>,
    /// `--ulimit` entries (name, soft, hard); out of the key when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<(String, u64, u64)>,
    /// `--shm-size` in bytes; out of the key when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<u64>,
    pub network: NetworkMode,
    pub mounts: Vec<ExecMount>,
    #[serde(skip)]
    pub proxy_env: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The host's network namespace (rootless BuildKit's default).
    Default,
    Host,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ExecMount {
    pub target: String,
    pub kind: ExecMountKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ExecMountKind {
    /// A path of input `input` (a stage, named context or the main context).
    Bind {
        input: usize,
        source: String,
        readwrite: bool,
    },
    /// A directory kept in the state root across builds.
    Cache {
        id: String,
        sharing: CacheSharing,
        mode: u32,
        uid: u32,
        gid: u32,
        from: Option<(usize, String)>,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// `--secret` `id`: a file at the target and/or an environment variable; never its value.
    Secret {
        id: String,
        file: bool,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A file with this content (a `RUN <<EOF` script with a `#!` line).
    Inline {
        data: Vec<u8>,
        mode: u32,
    },
    /// `--ssh` `id`: an agent socket at the target.
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CacheSharing {
    Shared,
    Private,
    Locked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ImageSource {
    /// An image in an OCI layout directory, pinned to a manifest digest.
    OciLayout { path: PathBuf, manifest_digest: Digest, reference: String },
    /// An image in a registry, pinned to a manifest digest; its manifest and config are blobs in
    /// the store (put there when the reference was resolved).
    Registry { reference: String, manifest_digest: Digest },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ContextSource {
    /// `context` for the main context, else the `--build-context` name.
    pub name: String,
    pub dir: PathBuf,
    /// The Dockerfile, whose `<name>.dockerignore` wins over the context's `.dockerignore`.
    pub dockerfile: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileAction {
    Copy(CopyAction),
    Mkdir(MkdirAction),
    Mkfile(MkfileAction),
}

/// `user[:group]` as written, resolved against the destination's /etc/passwd and /etc/group
/// when the step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Owner {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Chmod {
    Octal(u32),
    /// `u+x,go-w`, `a=rX`: applied per file, as chmod(1) does.
    Symbolic(String),
}

impl Chmod {
    /// Parses a `--chmod` value: octal (`755`, `0644`) or symbolic (`u+x,go-w`, `a=rX`).
    pub(crate) fn parse(text: &str) -> Result<Chmod, String> {
        let invalid = || format!("invalid chmod parameter: `{text}`");
        if !text.is_empty() && text.chars().all(|c| c.is_digit(8)) {
            let mode = u32::from_str_radix(text, 8).map_err(|_| invalid())?;
            if mode > 0o7777 {
                return Err(invalid());
            }
            return Ok(Chmod::Octal(mode));
        }
        apply_symbolic(text, 0, false).ok_or_else(invalid)?;
        Ok(Chmod::Symbolic(text.into()))
    }

    /// The new permission bits of a file that has `mode`.
    pub(crate) fn apply(&self, mode: u32, is_directory: bool) -> u32 {
        match self {
            Chmod::Octal(bits) => *bits,
            Chmod::Symbolic(text) => apply_symbolic(text, mode, is_directory).unwrap_or(mode & 0o7777),
        }
    }
}

/// chmod(1) symbolic modes: `[ugoa]*[+-=][rwxXst]*`, comma-separated.
fn apply_symbolic(text: &str, mode: u32, is_directory: bool) -> Option<u32> {
    let mut mode = mode & 0o7777;
    for clause in text.split(',') {
        let operator_at = clause.find(['+', '-', '='])?;
        let (who, rest) = clause.split_at(operator_at);
        let mut mask = 0u32;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => 0o7777,
                _ => return None,
            };
        }
        if who.is_empty() {
            mask = 0o7777;
        }
        let mut chars = rest.chars();
        let operator = chars.next()?;
        let mut bits = 0u32;
        for c in chars {
            bits |= match c {
                'r' => 0o444,
                'w' => 0o222,
                'x' => 0o111,
                'X' if is_directory || mode & 0o111 != 0 => 0o111,
                'X' => 0,
                's' => 0o6000,
                't' => 0o1000,
                _ => return None,
            };
        }
        let bits = bits & mask;
        mode = match operator {
            '+' => mode | bits,
            '-' => mode & !bits,
            '=' => (mode & !mask) | bits,
            _ => return None,
        };
    }
    Some(mode)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct CopyAction {
    /// Index into the vertex's inputs of the source (0 is the destination base).
    pub source_input: usize,
    /// Source paths or wildcard patterns, relative to the source root.
    pub sources: Vec<String>,
    /// Absolute destination; a trailing `/` means "into this directory".
    pub dest: String,
    pub owner: Option<Owner>,
    pub chmod: Option<Chmod>,
    pub excludes: Vec<String>,
    /// `--parents`: keep the source's directory structure under dest.
    pub parents: bool,
    /// `ADD`: extract local tar archives into dest.
    pub unpack: bool,
    /// Time for directories the copy creates (SOURCE_DATE_EPOCH), else the Unix epoch.
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MkdirAction {
    pub path: String,
    pub mode: u32,
    pub owner: Option<Owner>,
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MkfileAction {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub owner: Option<Owner>,
    pub chmod: Option<Chmod>,
    pub timestamp: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("0644").unwrap(), Chmod::Octal(0o644));
        assert!(Chmod::parse("9").is_err());
        assert!(Chmod::parse("u+q").is_err());
        let symbolic = Chmod::parse("u+x,go-w").unwrap();
        assert_eq!(symbolic.apply(0o666, false), 0o744);
        let capital_x = Chmod::parse("a=rX").unwrap();
        assert_eq!(capital_x.apply(0o600, false), 0o444);
        assert_eq!(capital_x.apply(0o700, false), 0o555);
        assert_eq!(capital_x.apply(0o700, true), 0o555);
    }
}
