//! Selects the build-context files one COPY/ADD uses and hashes them into a content digest,
//! the root of that step's cache key (DESIGN.md section 3).
//!
//! How a source is resolved, following BuildKit (`cache/contenthash`, fsutil's copy):
//! - The source is cleaned as `path.Join("/", source)`: `./x`, `/x` and `../x` all mean `x` in
//!   the context root, so nothing escapes the context.
//! - It is split into the longest wildcard-free prefix and the wildcard part. Only the prefix's
//!   subtree is listed, and inside it only directories a wildcard component can still match,
//!   so files no COPY uses are never read. Wildcards (`*`, `?`, `[...]`, `\`) follow Go's
//!   `path.Match`, one path component at a time; a match ends the wildcard part and selects
//!   that path and everything below it.
//! - Symlinks met *inside* the prefix are resolved within the context (an absolute target
//!   starts again at the context root, `..` stops at it), like BuildKit's scoped lookup; the
//!   entries keep the path the user wrote. A matched source that is itself a symlink (named,
//!   or matched by a wildcard) is resolved the same way, chains included, and what it leads
//!   to is selected under the source's name: a file's content, a directory's tree. A link that
//!   leads nowhere inside the context (dangling, or out of it) is "not found", as in BuildKit.
//!   Symlinks below a selected directory are recorded as symlinks and never followed, so no
//!   file outside the context is ever read. Each entry carries its [`Entry::real`] path, the
//!   only path a copy may read.
//! - `.dockerignore` is tested against the real (resolved) path with parent matching, as if
//!   the context had been transferred through it: an excluded directory is walked only when an
//!   exception may re-include something below it, and is kept only when something below it is.
//!   What lies below a matched directory is listed by [`super::walk`] (`ignore`'s parallel
//!   walker with rbuild's rules); this module finds the matches and hashes what is kept.
//! - `--exclude` patterns use the same language, tested against the path relative to each
//!   matched source (BuildKit's semantics: `COPY --exclude=*.mp3 dir* /d` drops `dir1/x.mp3`);
//!   the matched source itself is never tested against them.
//!
//! Errors: a source without wildcards that matches nothing, or only paths removed by
//! `.dockerignore`, is [`SelectionError::NotFound`], naming the rule when one removed it; a
//! wildcard source that matches nothing selects nothing (BuildKit builds `COPY nomatch* /d/`). Paths removed by
//! `--exclude` only give an empty selection (BuildKit accepts `ADD --exclude=* dir* /d`).
//!
//! The selection digest (cache-key input, versioned by its first line):
//!
//! | input                                   | in digest | why                                  |
//! |-----------------------------------------|-----------|--------------------------------------|
//! | path relative to the context root       | yes       | where the content lands              |
//! | kind, permission bits (incl. setuid)    | yes       | copied into the layer                |
//! | file content (sha256), symlink target   | yes       | the data itself                      |
//! | mtime, uid/gid, inode, host path        | no        | differ between checkouts, not content |
//!
//! Contents are hashed on the rayon pool. A [`HashCache`] keyed by [`StatKey`] (size, mtime,
//! ctime, inode, device) skips unchanged files; a file whose stat changes while it is read is
//! hashed but not cached. Sockets, fifos and device nodes are skipped (a rootless copy cannot
//! reproduce them). A name that is not UTF-8 is an error rather than a lossy, colliding path.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::content_hash::hash_file;
use super::content_hash::{HashCache, StatKey};
use super::dockerignore::{DockerIgnore, DockerIgnoreError, MatchPattern, contains_wildcards};
use super::in_root::HostTree;
use super::walk::{self, Found, FoundKind, Outcome};
use crate::oci::path::clean;
use crate::oci::root_path::{self, Resolution};
use crate::oci::{Digest, DigestHasher, FileStamp};

const DIGEST_VERSION: &str = "rbuild.context.selection.v1";

/// The entries one COPY/ADD uses and their combined digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Sorted by path; each path once.
    pub entries: Vec<Entry>,
    /// For each source, in order, the paths it matched (sorted; `.` for the context root):
    /// the roots a copy starts from. Decided here once; the copy never matches again.
    pub roots: Vec<Vec<String>>,
    /// `sha256:<hex>` over the entries (see the module table).
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root, `/`-separated; `.` is the context root itself.
    pub path: String,
    /// Where the entry's content is: inside the context, every symlink on the way resolved
    /// within it (not in the digest). Reading `context/path` instead could follow a link out of
    /// the context.
    pub real: PathBuf,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `hard_link`: (device, inode) of a file with more than one link when it was walked, so a
    /// copy can keep its links together.
    File {
        size: u64,
        digest: Digest,
        hard_link: Option<(u64, u64)>,
    },
    Directory,
    Symlink {
        target: String,
    },
}

/// Display and `Error` are written by hand: thiserror treats any field named `source` as the
/// error's cause, and `NotFound { source }` (the COPY source) is the agreed shape.
#[derive(Debug)]
pub enum SelectionError {
    /// `source` is the cleaned source as BuildKit prints it (`/x`); `excluded_by` is the
    /// `.dockerignore` rule (text, line) that removed it, if one did.
    NotFound {
        source: String,
        excluded_by: Option<(String, usize)>,
    },
    /// A wildcard in a COPY source is malformed.
    InvalidSource {
        source: String,
    },
    /// A `--exclude` pattern is malformed.
    InvalidExclude(DockerIgnoreError),
    TooManyLinks {
        source: String,
    },
    NonUtf8Path {
        path: PathBuf,
    },
    Io {
        action: IoAction,
        path: PathBuf,
        error: io::Error,
    },
}

/// What was being done when an I/O call failed, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoAction {
    OpenContext,
    ReadMetadata,
    ReadDirectory,
    ReadLink,
    ReadFile,
}

impl fmt::Display for SelectionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectionError::NotFound { source, excluded_by: None } => {
                write!(formatter, "failed to compute cache key: \"{source}\": not found")
            }
            SelectionError::NotFound { source, excluded_by: Some((pattern, line)) } => write!(
                formatter,
                "failed to compute cache key: \"{source}\": not found (excluded by .dockerignore rule `{pattern}` on line {line})"
            ),
            SelectionError::InvalidSource { source } => {
                write!(formatter, "invalid source `{source}`: syntax error in pattern")
            }
            SelectionError::InvalidExclude(_) => write!(formatter, "invalid --exclude pattern"),
            SelectionError::TooManyLinks { source } => {
                write!(formatter, "too many levels of symbolic links resolving `{source}`")
            }
            SelectionError::NonUtf8Path { path } => {
                write!(formatter, "path `{}` is not valid UTF-8", path.display())
            }
            SelectionError::Io { action, path, .. } => {
                let verb = match action {
                    IoAction::OpenContext => "failed to open build context",
                    IoAction::ReadMetadata => "failed to read metadata of",
                    IoAction::ReadDirectory => "failed to read directory",
                    IoAction::ReadLink => "failed to read symlink",
                    IoAction::ReadFile => "failed to read file",
                };
                write!(formatter, "{verb} `{}`", path.display())
            }
        }
    }
}

impl std::error::Error for SelectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SelectionError::InvalidExclude(error) => Some(error),
            SelectionError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Selects and hashes the context files that `sources` (already expanded COPY/ADD sources,
/// relative to the context root) reach, minus `.dockerignore` and `--exclude` matches.
pub fn select(
    context_dir: &Path,
    ignore: &DockerIgnore,
    sources: &[String],
    excludes: &[String],
    parents: bool,
    cache: &dyn HashCache,
) -> Result<Selection, SelectionError> {
    let root = fs::canonicalize(context_dir).map_err(|error| SelectionError::Io {
        action: IoAction::OpenContext,
        path: context_dir.to_path_buf(),
        error,
    })?;
    let excludes = DockerIgnore::from_patterns(excludes).map_err(SelectionError::InvalidExclude)?;
    let mut walker = Walker { root: &root, ignore, excludes: &excludes, parents, found: Vec::new() };
    let mut roots = Vec::with_capacity(sources.len());
    for source in sources {
        // A wildcard that matches nothing (or only ignored paths) selects nothing, as BuildKit
        // allows; a plain path that is missing is an error.
        let cleaned = clean(&format!("/{source}"));
        match walker.select_source(source) {
            Ok(matched) => roots.push(matched),
            Err(SelectionError::NotFound { source: missing, .. }) if missing == cleaned && contains_wildcards(&cleaned) => {
                roots.push(Vec::new());
            }
            Err(error) => return Err(error),
        }
    }
    let entries = hash_entries(first_of_each_path(walker.found), cache)?;
    // Sorted by `first_of_each_path`; rayon's `collect` of an indexed iterator keeps the order.
    debug_assert!(entries.windows(2).all(|pair| pair[0].path < pair[1].path));
    let digest = selection_digest(&entries);
    Ok(Selection { entries, roots, digest })
}

/// One wildcard component of a source.
struct Component {
    pattern: MatchPattern,
    /// `**` under `--parents`: any number of directories, none included.
    any_depth: bool,
}

/// A `--parents` source split at its pivot: (`a/b`, `c`) for `a/b/./c`, (``, `c`) for `./c`;
/// `None` without a pivot (the whole path is kept).
fn pivot_split(source: &str) -> Option<(String, String)> {
    if let Some(position) = source.find("/./") {
        return Some((source[..position].to_string(), source[position + 3..].to_string()));
    }
    if let Some(before) = source.strip_suffix("/.").filter(|before| !before.is_empty()) {
        return Some((before.to_string(), String::new()));
    }
    source.strip_prefix("./").map(|after| (String::new(), after.to_string()))
}

enum Resolved {
    /// Real path relative to the root (no symlinks in it but possibly the last component).
    Found(String),
    Missing,
    /// A symlink on the way is itself removed by `.dockerignore`.
    Ignored(String, usize),
}

struct Walker<'a> {
    root: &'a Path,
    ignore: &'a DockerIgnore,
    excludes: &'a DockerIgnore,
    /// `COPY --parents`: `**` matches any number of directories, and `--exclude` is tested
    /// against each path after the source's `/./` pivot, the match itself included.
    parents: bool,
    /// What the matches' walks kept, in the order found (a path twice when two sources reach it).
    found: Vec<(String, Found)>,
}

impl Walker<'_> {
    /// Selects one source; returns the paths it matched.
    fn select_source(&mut self, source: &str) -> Result<Vec<String>, SelectionError> {
        let cleaned = clean(&format!("/{source}"));
        let components: Vec<&str> = cleaned.split('/').filter(|part| !part.is_empty()).collect();
        // `--parents`: what comes before the `/./` pivot is not kept, nor seen by `--exclude`.
        // A pivot with nothing after it names nothing: "not found", as BuildKit says.
        let pivot = if self.parents { pivot_split(source) } else { None };
        if let Some((before, after)) = &pivot
            && !before.is_empty()
            && clean(&format!("/{after}")).trim_matches('/').is_empty()
        {
            return Err(SelectionError::NotFound { source: clean(&format!("/{before}")), excluded_by: None });
        }
        let pivot = pivot.map(|(before, _)| before);
        let pivot_components =
            pivot.as_deref().map_or(0, |prefix| prefix.split('/').filter(|part| !part.is_empty() && *part != ".").count());
        let split = components.iter().position(|part| contains_wildcards(part)).unwrap_or(components.len());
        let (prefix, wildcard_part) = components.split_at(split);
        let patterns = wildcard_part
            .iter()
            .map(|part| {
                let any_depth = self.parents && *part == "**";
                MatchPattern::compile(part).map(|pattern| Component { pattern, any_depth })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| SelectionError::InvalidSource { source: cleaned.clone() })?;
        let not_found = |excluded_by| SelectionError::NotFound { source: cleaned.clone(), excluded_by };

        let real_prefix = match self.resolve(prefix, !patterns.is_empty(), &cleaned)? {
            Resolved::Found(real) => real,
            Resolved::Missing => return Err(not_found(None)),
            Resolved::Ignored(text, line) => return Err(not_found(Some((text, line)))),
        };
        let original_prefix = prefix.join("/");

        let mut matches = Vec::new();
        if patterns.is_empty() {
            matches.push((real_prefix, original_prefix));
        } else {
            self.find_matches(&real_prefix, &original_prefix, &patterns, &mut matches)?;
        }
        if matches.is_empty() {
            return Err(not_found(None));
        }

        let mut first_ignored = None;
        let mut any_accepted = false;
        let mut roots = Vec::new();
        for (real, original) in matches {
            // A matched symlink stands for what it leads to, inside the context.
            let real = match self.follow_match(&real, &cleaned)? {
                Resolved::Found(target) => target,
                Resolved::Missing => {
                    return Err(SelectionError::NotFound { source: format!("/{original}"), excluded_by: None });
                }
                Resolved::Ignored(text, line) => {
                    first_ignored.get_or_insert((text, line));
                    continue;
                }
            };
            let exclude_path = self.parents.then(|| original.split('/').skip(pivot_components).collect::<Vec<_>>().join("/"));
            match self.visit(&real, &original, exclude_path.as_deref().filter(|path| !path.is_empty()))? {
                Outcome::Kept => {
                    any_accepted = true;
                    roots.push(if original.is_empty() { ".".to_string() } else { original });
                }
                Outcome::Dropped => any_accepted = true,
                Outcome::Ignored(text, line) => {
                    first_ignored.get_or_insert((text, line));
                }
            }
        }
        match (any_accepted, first_ignored) {
            (false, Some(rule)) => Err(not_found(Some(rule))),
            _ => {
                roots.sort();
                roots.dedup();
                Ok(roots)
            }
        }
    }

    /// A match (a real path, symlinks resolved but possibly the last component) with its last
    /// component followed too when it is a symlink. The target is tested against
    /// `.dockerignore`, as BuildKit's transferred context would lack it.
    fn follow_match(&self, real: &str, source: &str) -> Result<Resolved, SelectionError> {
        let absolute = self.root.join(real);
        let is_link =
            fs::symlink_metadata(&absolute).map_err(|error| io_error(IoAction::ReadMetadata, absolute, error))?.file_type().is_symlink();
        if !is_link {
            return Ok(Resolved::Found(real.to_string()));
        }
        if let Some(rule) = self.ignore.excluded_by(real) {
            return Ok(Resolved::Ignored(rule.text.clone(), rule.line));
        }
        let components: Vec<&str> = real.split('/').collect();
        let resolved = self.resolve(&components, true, source)?;
        if let Resolved::Found(target) = &resolved
            && let Some(rule) = self.ignore.excluded_by(target)
        {
            return Ok(Resolved::Ignored(rule.text.clone(), rule.line));
        }
        Ok(resolved)
    }

    /// Resolves the wildcard-free prefix inside the context: symlinks on the way are followed
    /// within the root, the last component only when `follow_last`.
    fn resolve(&self, components: &[&str], follow_last: bool, source: &str) -> Result<Resolved, SelectionError> {
        let path = components.join("/");
        // A link `.dockerignore` removes is not in the transferred context: the walk stops
        // there, with the rule.
        let mut unless_ignored = |link: &str| match self.ignore.excluded_by(link) {
            Some(rule) => ControlFlow::Break((rule.text.clone(), rule.line)),
            None => ControlFlow::Continue(()),
        };
        let resolved = root_path::resolve_with(&HostTree(self.root), &path, follow_last, &mut unless_ignored)
            .map_err(|error| io_error(IoAction::ReadMetadata, self.root.join(&path), error))?;
        Ok(match resolved {
            Resolution::Found { path, .. } => Resolved::Found(path),
            Resolution::Missing { .. } => Resolved::Missing,
            Resolution::Stopped((text, line)) => Resolved::Ignored(text, line),
            Resolution::TooManyLinks => return Err(SelectionError::TooManyLinks { source: source.to_string() }),
        })
    }

    /// Lists only directories the wildcard components can still match; a path matching all of
    /// them is a match (symlinked directories are not entered, as in BuildKit's tree).
    fn find_matches(
        &self,
        real_dir: &str,
        original_dir: &str,
        patterns: &[Component],
        matches: &mut Vec<(String, String)>,
    ) -> Result<(), SelectionError> {
        let Some((component, rest)) = patterns.split_first() else {
            return Ok(());
        };
        if component.any_depth {
            return self.find_any_depth(real_dir, original_dir, patterns, matches);
        }
        let pattern = &component.pattern;
        let absolute = self.root.join(real_dir);
        for name in self.list_directory(real_dir)? {
            if !pattern.matches(&name.to_string_lossy()) {
                continue;
            }
            let name = utf8_name(name, &absolute)?;
            let real = join(real_dir, &name);
            let original = join(original_dir, &name);
            if rest.is_empty() {
                matches.push((real, original));
                continue;
            }
            // Ignored directories are still entered so that a not-found error can name the rule.
            if self.is_directory(&real)? {
                self.find_matches(&real, &original, rest, matches)?;
            }
        }
        Ok(())
    }

    /// `**` under `--parents`: the rest matched here (no directory), then in every directory
    /// below (not through symlinks). `**` last matches everything below, directories included.
    fn find_any_depth(
        &self,
        real_dir: &str,
        original_dir: &str,
        patterns: &[Component],
        matches: &mut Vec<(String, String)>,
    ) -> Result<(), SelectionError> {
        let rest = &patterns[1..];
        if rest.is_empty() {
            if !original_dir.is_empty() {
                matches.push((real_dir.to_string(), original_dir.to_string()));
            }
        } else {
            self.find_matches(real_dir, original_dir, rest, matches)?;
        }
        let absolute = self.root.join(real_dir);
        for name in self.list_directory(real_dir)? {
            let name = utf8_name(name, &absolute)?;
            let real = join(real_dir, &name);
            if self.is_directory(&real)? {
                self.find_any_depth(&real, &join(original_dir, &name), patterns, matches)?;
            } else if rest.is_empty() {
                matches.push((real, join(original_dir, &name)));
            }
        }
        Ok(())
    }

    /// The sorted names in a directory of the context; none when it is missing or not a
    /// directory (a pattern that goes on below a file matches nothing there).
    fn list_directory(&self, real_dir: &str) -> Result<Vec<std::ffi::OsString>, SelectionError> {
        let absolute = self.root.join(real_dir);
        let mut names = match read_names(&absolute) {
            Ok(names) => names,
            Err(error) if is_missing(&error) => return Ok(Vec::new()),
            Err(error) => return Err(io_error(IoAction::ReadDirectory, absolute, error)),
        };
        names.sort();
        Ok(names)
    }

    /// Whether a path of the context is a directory itself (a symlink is not).
    fn is_directory(&self, real: &str) -> Result<bool, SelectionError> {
        let path = self.root.join(real);
        let metadata = fs::symlink_metadata(&path).map_err(|error| io_error(IoAction::ReadMetadata, path, error))?;
        Ok(metadata.is_dir())
    }

    /// Walks one matched path and what is below it (see [`walk`]) and records what is kept.
    /// `exclude_path` is the path relative to the matched source (`None` for the match itself,
    /// which `--exclude` never removes).
    fn visit(&mut self, real: &str, original: &str, exclude_path: Option<&str>) -> Result<Outcome, SelectionError> {
        let mut walked = walk::walk(self.root, real, exclude_path, self.ignore, self.excludes)?;
        // Renamed in place (most selections have one match, whose entries become the list).
        for (path, _) in &mut walked.entries {
            *path = match (original.is_empty(), path.is_empty()) {
                (true, true) => ".".to_string(),
                (false, true) => original.to_string(),
                (true, false) => continue,
                (false, false) => format!("{original}/{path}"),
            };
        }
        if self.found.is_empty() {
            self.found = walked.entries;
        } else {
            self.found.append(&mut walked.entries);
        }
        Ok(walked.outcome)
    }
}

/// The entries sorted by path, each path once, as the first source that reached it found it.
/// Each walk gives its entries sorted, so the stable sort mostly merges a few sorted runs; a map
/// keyed by path compared strings for every insertion, which showed in the profile of a
/// 50,000-file no-op rebuild.
fn first_of_each_path(mut found: Vec<(String, Found)>) -> Vec<(String, Found)> {
    found.sort_by(|(left, _), (right, _)| left.cmp(right));
    found.dedup_by(|(later, _), (first, _)| later == first);
    found
}

/// Hashes file contents in parallel, asking the cache first; keeps the order of `found`.
fn hash_entries(found: Vec<(String, Found)>, cache: &dyn HashCache) -> Result<Vec<Entry>, SelectionError> {
    found
        .into_par_iter()
        .map(|(path, found)| {
            let (kind, real) = match found.kind {
                FoundKind::Directory => (EntryKind::Directory, found.absolute),
                FoundKind::Symlink(target) => (EntryKind::Symlink { target }, found.absolute),
                FoundKind::File(stamp) => {
                    let key = StatKey { path: found.absolute, stamp };
                    let digest = match cache.get(&key) {
                        Some(digest) => digest,
                        None => {
                            let digest = hash_file(&key.path).map_err(|error| io_error(IoAction::ReadFile, key.path.clone(), error))?;
                            // Only a file that did not change while we read it may be cached.
                            let after = fs::symlink_metadata(&key.path).map(|metadata| FileStamp::of(&metadata));
                            if after.is_ok_and(|after| after == stamp) {
                                cache.put(&key, &digest);
                            }
                            digest
                        }
                    };
                    let hard_link = (found.links > 1).then_some((stamp.device, stamp.inode));
                    (EntryKind::File { size: stamp.size, digest, hard_link }, key.path)
                }
            };
            Ok(Entry { path, real, kind, mode: found.mode, mtime: found.mtime, mtime_nanos: found.mtime_nanos })
        })
        .collect()
}

/// Every field ends with NUL, which no path, digest or link target can contain, so two
/// different selections never feed the same bytes. The fields go through a buffer, hashed
/// whenever it fills: hashed field by field, the small copies into the hasher's block showed in
/// the profile of a 50,000-file no-op rebuild.
fn selection_digest(entries: &[Entry]) -> String {
    const FLUSH_AT: usize = 64 * 1024;
    let mut hasher = DigestHasher::sha256();
    let mut buffer = Vec::with_capacity(FLUSH_AT + 4096);
    buffer.extend_from_slice(DIGEST_VERSION.as_bytes());
    buffer.push(b'\n');
    for entry in entries {
        let (kind, payload) = match &entry.kind {
            EntryKind::File { digest, .. } => ("file", digest.as_str()),
            EntryKind::Directory => ("dir", ""),
            EntryKind::Symlink { target } => ("symlink", target.as_str()),
        };
        buffer.extend_from_slice(entry.path.as_bytes());
        buffer.push(0);
        buffer.extend_from_slice(kind.as_bytes());
        buffer.push(0);
        // Writing into a Vec cannot fail.
        let _ = write!(buffer, "{:o}", entry.mode);
        buffer.push(0);
        buffer.extend_from_slice(payload.as_bytes());
        buffer.push(0);
        if buffer.len() >= FLUSH_AT {
            hasher.update(&buffer);
            buffer.clear();
        }
    }
    hasher.update(&buffer);
    hasher.finish().to_string()
}

pub(super) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

fn read_names(directory: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    fs::read_dir(directory)?.map(|entry| entry.map(|entry| entry.file_name())).collect()
}

fn utf8_name(name: std::ffi::OsString, directory: &Path) -> Result<String, SelectionError> {
    name.into_string().map_err(|name| SelectionError::NonUtf8Path { path: directory.join(name) })
}

pub(super) fn is_missing(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

pub(super) fn io_error(action: IoAction, path: PathBuf, error: io::Error) -> SelectionError {
    SelectionError::Io { action, path, error }
}

#[cfg(test)]
#[path = "selection_tests.rs"]
mod tests;
