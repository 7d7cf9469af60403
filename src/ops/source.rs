//! The files a copy reads, listed the same way whether they come from a build context (a
//! [`Selection`], already filtered by .dockerignore and `--exclude`) or from another stage's
//! filesystem (a [`LayeredView`]): one sorted map from relative path to entry. The copy logic in
//! `file.rs` works on this listing only.
//!
//! Paths are relative, `/`-separated, without a leading `/`; the empty path is the source root.
//! A top-level match that is a symlink is followed (BuildKit copies what a named link points
//! to), inside the source only; links below a match are copied as links.

use crate::oci::path::clean_in_root;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::context::selection::{EntryKind, Selection};
use crate::oci::Digest;
use crate::snapshot::view::{LayeredView, Node};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SourceKind {
    File,
    Directory,
    Symlink(PathBuf),
    /// A device or fifo, recreated with mknod.
    Special {
        mode: u32,
        device: u64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct SourceEntry {
    pub path: String,
    pub kind: SourceKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// Where the bytes are on the host.
    pub real: PathBuf,
    /// (device, inode) of a file with several links, so the copy keeps them linked.
    pub link: Option<(u64, u64)>,
    /// A context file's content digest and size, as the selection hashed them (an incremental
    /// copy links an unchanged file by them); `None` for a stage's files.
    pub content: Option<(Digest, u64)>,
}

/// The hard-link identity of a regular file with more than one link.
fn link_of(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    (metadata.is_file() && metadata.nlink() > 1).then(|| (metadata.dev(), metadata.ino()))
}

#[derive(Debug, Default)]
pub(super) struct SourceListing {
    pub entries: BTreeMap<String, SourceEntry>,
    /// For each source, in order, the paths of the entries it matched (the empty path for the
    /// source root): where a copy starts. Matching happens once, when the listing is made.
    pub roots: Vec<Vec<String>>,
}

pub(super) fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

impl SourceListing {
    /// Context files: owned by root, as BuildKit copies them. The selection has already followed
    /// the symlinks that sources name or match; each entry is read from its real path. The
    /// entries are moved out of a selection nothing else holds (50,000 paths and digests are
    /// megabytes), copied out of a shared one.
    pub(super) fn from_selection(selection: Arc<Selection>) -> SourceListing {
        let selection = Arc::try_unwrap(selection).unwrap_or_else(|shared| (*shared).clone());
        let mut entries = BTreeMap::new();
        for entry in selection.entries {
            // The context root is listed as `.`; the listing names it by the empty path.
            let path = if entry.path == "." { String::new() } else { entry.path };
            let kind = match &entry.kind {
                EntryKind::File { .. } => SourceKind::File,
                EntryKind::Directory => SourceKind::Directory,
                EntryKind::Symlink { target } => SourceKind::Symlink(PathBuf::from(target)),
            };
            entries.insert(
                path.clone(),
                SourceEntry {
                    path,
                    kind,
                    mode: entry.mode & 0o7777,
                    uid: 0,
                    gid: 0,
                    mtime: entry.mtime,
                    mtime_nanos: entry.mtime_nanos,
                    // As the walk saw it: stat-ing every file again cost a tenth of a one-file
                    // edit's copy of a 50,000-file context.
                    link: match &entry.kind {
                        EntryKind::File { hard_link, .. } => *hard_link,
                        _ => None,
                    },
                    real: entry.real,
                    content: match entry.kind {
                        EntryKind::File { size, digest, .. } => Some((digest, size)),
                        _ => None,
                    },
                },
            );
        }
        let roots = selection
            .roots
            .into_iter()
            .map(|matched| matched.into_iter().map(|path| if path == "." { String::new() } else { path }).collect())
            .collect();
        SourceListing { entries, roots }
    }

    /// A stage's (or image's) files. `parents`: `**` matches any number of directories.
    pub(super) fn from_view(view: &LayeredView, patterns: &[String], parents: bool) -> io::Result<SourceListing> {
        let mut listing = SourceListing::default();
        for pattern in patterns {
            let pattern = clean_in_root(pattern);
            let mut matched = Vec::new();
            for (path, node) in view_matches(view, &pattern, parents)? {
                listing.add_tree(view, &path, &node)?;
                matched.push(path);
            }
            matched.sort();
            matched.dedup();
            listing.roots.push(matched);
        }
        Ok(listing)
    }

    fn add_tree(&mut self, view: &LayeredView, path: &str, node: &Node) -> io::Result<()> {
        let Some(metadata) = node.metadata() else { return Ok(()) };
        let real = match node {
            Node::Leaf { path, .. } => path.clone(),
            Node::Directory { stack, .. } => stack.first().cloned().unwrap_or_default(),
            Node::Missing => return Ok(()),
        };
        let file_type = metadata.file_type();
        let kind = if node.is_directory() {
            SourceKind::Directory
        } else if file_type.is_symlink() {
            SourceKind::Symlink(std::fs::read_link(&real)?)
        } else if file_type.is_file() {
            SourceKind::File
        } else {
            SourceKind::Special { mode: metadata.mode(), device: metadata.rdev() }
        };
        self.entries.insert(
            path.to_string(),
            SourceEntry {
                path: path.to_string(),
                kind,
                mode: metadata.mode() & 0o7777,
                uid: metadata.uid(),
                gid: metadata.gid(),
                mtime: metadata.mtime(),
                mtime_nanos: metadata.mtime_nsec() as u32,
                link: link_of(metadata),
                real,
                content: None,
            },
        );
        if node.is_directory() {
            for (name, child) in view.read_dir(node)? {
                let child_path = join(path, &name);
                self.add_tree(view, &child_path, &child)?;
            }
        }
        Ok(())
    }

    /// Everything below `path` (the whole listing for the root), in path order.
    pub(super) fn descendants<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a SourceEntry> + 'a {
        let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(key, _)| key.starts_with(&prefix))
            .filter(|(key, _)| !key.is_empty())
            .map(|(_, entry)| entry)
    }
}

fn join(parent: &str, name: &OsStr) -> String {
    let name = name.to_string_lossy();
    if parent.is_empty() { name.into_owned() } else { format!("{parent}/{name}") }
}

/// The paths and nodes a cleaned pattern matches in a view; named symlinks followed.
/// `parents`: a `**` component matches any number of directories (none included).
fn view_matches(view: &LayeredView, pattern: &str, parents: bool) -> io::Result<Vec<(String, Node)>> {
    if !has_wildcard(pattern) {
        let (node, _) = view.resolve(&format!("/{pattern}"), true)?;
        return Ok(if node.exists() { vec![(pattern.to_string(), node)] } else { vec![] });
    }
    let parts: Vec<&str> = pattern.split('/').collect();
    let mut current = Vec::new();
    match_parts(view, String::new(), view.root()?, &parts, parents, &mut current)?;
    // Follow named links.
    let mut resolved = Vec::new();
    for (path, node) in current {
        let node = match &node {
            Node::Leaf { metadata, .. } if metadata.file_type().is_symlink() => view.resolve(&format!("/{path}"), true)?.0,
            _ => node,
        };
        if node.exists() {
            resolved.push((path, node));
        }
    }
    Ok(resolved)
}

/// Matches `parts` below `node` (at `path`), adding every full match to `found`.
fn match_parts(
    view: &LayeredView,
    path: String,
    node: Node,
    parts: &[&str],
    parents: bool,
    found: &mut Vec<(String, Node)>,
) -> io::Result<()> {
    let Some((&part, rest)) = parts.split_first() else {
        found.push((path, node));
        return Ok(());
    };
    if parents && part == "**" {
        // No directory: the rest matches here (`**` last matches nothing by itself here).
        if !rest.is_empty() {
            match_parts(view, path.clone(), node.clone(), rest, parents, found)?;
        }
        if node.is_directory() {
            for (name, child) in view.read_dir(&node)? {
                let child_path = join(&path, &name);
                if child.is_directory() {
                    match_parts(view, child_path, child, parts, parents, found)?;
                } else if rest.is_empty() {
                    found.push((child_path, child));
                }
            }
        }
        return Ok(());
    }
    if has_wildcard(part) {
        if node.is_directory() {
            for (name, child) in view.read_dir(&node)? {
                if glob_match(part, &name.to_string_lossy()) {
                    match_parts(view, join(&path, &name), child, rest, parents, found)?;
                }
            }
        }
        return Ok(());
    }
    let child_path = join(&path, OsStr::new(part));
    let (child, _) = view.resolve(&format!("/{child_path}"), true)?;
    if child.exists() {
        match_parts(view, child_path, child, rest, parents, found)?;
    }
    Ok(())
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[a-z]`, `[^a]`, `\` escapes.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Each (pattern rest, name rest) pair is tried once: without this, `*a*a*a...` backtracked
    // exponentially on a hostile Dockerfile's COPY source.
    let mut failed = std::collections::HashSet::new();
    glob_from(&pattern, &name, &mut failed)
}

fn glob_from(pattern: &[char], name: &[char], failed: &mut std::collections::HashSet<(usize, usize)>) -> bool {
    let state = (pattern.len(), name.len());
    if failed.contains(&state) {
        return false;
    }
    let Some((&first, rest)) = pattern.split_first() else { return name.is_empty() };
    let matched = match first {
        '*' => (0..=name.len()).any(|skip| glob_from(rest, &name[skip..], failed)),
        '?' => !name.is_empty() && glob_from(rest, &name[1..], failed),
        '[' => match name.split_first() {
            Some((&c, name_rest)) => match class_match(rest, c) {
                Some((true, after)) => glob_from(after, name_rest, failed),
                _ => false,
            },
            None => false,
        },
        '\\' if !rest.is_empty() => name.first() == Some(&rest[0]) && glob_from(&rest[1..], &name[1..], failed),
        literal => name.first() == Some(&literal) && glob_from(rest, &name[1..], failed),
    };
    if !matched {
        failed.insert(state);
    }
    matched
}

/// Matches `c` against a class body (after `[`); returns whether it matched and the pattern
/// after the closing `]`, or None for a malformed class.
fn class_match(body: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut rest) = match body.first() {
        Some('^') | Some('!') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let (&start, after) = rest.split_first()?;
        if start == ']' && !first {
            return Some((matched != negated, after));
        }
        first = false;
        let (start, after) = if start == '\\' { (*after.first()?, &after[1..]) } else { (start, after) };
        if after.first() == Some(&'-') && after.get(1).is_some_and(|end| *end != ']') {
            let end = after[1];
            if start <= c && c <= end {
                matched = true;
            }
            rest = &after[2..];
        } else {
            if start == c {
                matched = true;
            }
            rest = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "a.txt.bak"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("\\*", "a"));
        assert!(glob_match("*", ""));
    }

    /// Regression: `*a*a*...` against a long name backtracked exponentially (a hostile
    /// Dockerfile's COPY source never finished); each state is tried once now.
    #[test]
    fn many_stars_match_in_polynomial_time() {
        let pattern = format!("{}b", "*a".repeat(40));
        assert!(!glob_match(&pattern, &"a".repeat(300)));
        assert!(glob_match(&pattern, &format!("{}b", "a".repeat(300))));
    }

    #[test]
    fn cleaning_stays_inside_the_root() {
        assert_eq!(clean_in_root("/a/./b/"), "a/b");
        assert_eq!(clean_in_root("../../x"), "x");
        assert_eq!(clean_in_root("."), "");
        assert_eq!(clean_in_root("./"), "");
    }
}
