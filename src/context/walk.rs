//! The walk of one matched path of the build context and everything below it: `ignore`'s
//! parallel walker lists the directories, rbuild's `.dockerignore` and `--exclude` rules decide
//! what is kept. [`super::selection`] calls it once per path a COPY source matched.
//!
//! What the walk keeps, with BuildKit's semantics (fsutil's walker):
//! - `.dockerignore` is tested against the real path relative to the context root, with parent
//!   matching; `--exclude` against the path relative to the matched source (the match itself is
//!   never tested against it).
//! - An excluded directory is entered only when an exception (`!`) may re-include something
//!   below it ([`DockerIgnore::may_include_below`]), and is kept only as the parent of something
//!   kept. Its children are not known when a parallel walk meets it, so it is set aside and
//!   taken back after the walk when a kept entry lies below it.
//! - Symlinks are recorded with their target and never followed; sockets, fifos and device
//!   nodes are skipped (a rootless copy cannot reproduce them); an entry deleted while the walk
//!   runs is as if it had never been there. A name that is not UTF-8 is an error.
//!
//! `ignore` brings gitignore rules, `.ignore` files, hidden-file skipping and ignore files of
//! parent directories, all of which are turned off: BuildKit knows none of them, only
//! `.dockerignore` decides. The rules are applied in the visitor, after each entry's `lstat`,
//! so an entry that cannot be read is an error naming it whether or not a rule removes it, as
//! the sequential walk this replaces did. The price: an excluded directory that may not be
//! entered has had its names listed (`ignore` reads a directory before it visits it), never
//! its subtree.
//!
//! Determinism: threads find entries in any order, so the entries are sorted by path, and when
//! the walk meets errors the one reported is the first in walk order (the smallest path): the
//! same tree always gives the same answer.

use std::collections::HashSet;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ignore::{DirEntry, ParallelVisitor, ParallelVisitorBuilder, WalkBuilder, WalkState};
use nix::fcntl::AtFlags;
use rayon::slice::ParallelSliceMut;

use super::dockerignore::{DockerIgnore, Pattern};
use super::selection::{IoAction, SelectionError, io_error, is_missing, join};
use crate::oci::FileStamp;

/// An entry found by the walk, before its content is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Found {
    pub absolute: PathBuf,
    pub kind: FoundKind,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    /// The number of hard links.
    pub links: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FoundKind {
    /// A regular file, with its stamp at the walk (the key of its remembered hash, with the path).
    File(FileStamp),
    Directory,
    Symlink(String),
}

impl Found {
    fn new(absolute: PathBuf, kind: FoundKind, stat: &EntryStat) -> Found {
        Found {
            absolute,
            kind,
            mode: stat.mode & 0o7777,
            mtime: stat.mtime,
            // The kernel keeps nanoseconds below one second, so this always fits.
            mtime_nanos: u32::try_from(stat.mtime_nanos).unwrap_or(0),
            links: stat.links,
        }
    }
}

/// What the walk reads of an entry's `lstat`.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryStat {
    /// `st_mode`: the kind (`S_IFMT`) and the permission bits.
    mode: u32,
    links: u64,
    mtime: i64,
    mtime_nanos: i64,
    stamp: FileStamp,
}

impl EntryStat {
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
}

impl From<&Metadata> for EntryStat {
    fn from(metadata: &Metadata) -> EntryStat {
        EntryStat {
            mode: metadata.mode(),
            links: metadata.nlink(),
            mtime: metadata.mtime(),
            mtime_nanos: metadata.mtime_nsec(),
            stamp: FileStamp::of(metadata),
        }
    }
}

impl From<&libc::stat> for EntryStat {
    fn from(stat: &libc::stat) -> EntryStat {
        EntryStat {
            mode: stat.st_mode,
            links: stat.st_nlink,
            mtime: stat.st_mtime,
            mtime_nanos: stat.st_mtime_nsec,
            stamp: FileStamp::of_stat(stat),
        }
    }
}

/// The directory whose entries one thread of the walk is `lstat`ing, open. `ignore` hands every
/// entry over as a whole path, and an `lstat` of a path looks up each of its components again:
/// on the 50,000-file benchmark context, seven components deep, those lookups were a third of
/// the walk's CPU time (`__d_lookup_rcu`, `link_path_walk`). Relative to its open directory an
/// entry is one lookup. A thread is handed a directory's entries mostly one after the other (the
/// walker queues them on that thread's own stack), so one open directory per thread serves
/// nearly all of them.
#[derive(Default)]
struct OpenDirectory {
    path: PathBuf,
    directory: Option<File>,
}

impl OpenDirectory {
    fn lstat(&mut self, absolute: &Path) -> io::Result<EntryStat> {
        let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return fs::symlink_metadata(absolute).map(|metadata| EntryStat::from(&metadata));
        };
        let directory = match &self.directory {
            Some(directory) if self.path == parent => directory,
            _ => {
                self.directory = None;
                let opened = fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(parent)?;
                self.path = parent.to_path_buf();
                self.directory.insert(opened)
            }
        };
        let stat = nix::sys::stat::fstatat(Some(directory.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        Ok(EntryStat::from(&stat))
    }
}

/// What became of the matched path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Kept,
    /// Removed by this `.dockerignore` rule (text, line).
    Ignored(String, usize),
    /// Removed by `--exclude`, or not a kind that can be copied.
    Dropped,
}

/// The result of one walk.
#[derive(Debug)]
pub(super) struct Walked {
    pub outcome: Outcome,
    /// Sorted by path, relative to the matched path (`""` is the match itself); empty unless
    /// the outcome is [`Outcome::Kept`].
    pub entries: Vec<(String, Found)>,
}

/// Threads of the parallel walk: every core, at most eight (`ignore`'s own default is every
/// core up to 12).
///
/// Measured on the 50,000-file benchmark context, no-op rebuild with an OCI archive output, 2
/// cores, quiet machine (load below 1), `perf stat -r 8`, three alternations: 1 thread took
/// 430-460 ms, 2 threads 315-347 ms, at the same CPU time within 10%. An earlier measurement
/// under load (average 5.2 to 5.6) had 2 threads no faster than 1: a thread gains where a core
/// is idle, and costs little where none is.
fn threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());
    cores.clamp(1, 8)
}

/// Walks the path `real` (relative to `root`, symlinks on the way already resolved) and what
/// is below it. `exclude_path` is its path relative to the matched source for `--exclude`
/// (`None` for the match itself, which `--exclude` never removes).
pub(super) fn walk(
    root: &Path,
    real: &str,
    exclude_path: Option<&str>,
    ignore: &DockerIgnore,
    excludes: &DockerIgnore,
) -> Result<Walked, SelectionError> {
    walk_with_threads(root, real, exclude_path, &Rules { ignore, excludes }, threads())
}

fn walk_with_threads(root: &Path, real: &str, exclude_path: Option<&str>, rules: &Rules, threads: usize) -> Result<Walked, SelectionError> {
    let removed = |verdict: &Verdict| Walked { outcome: verdict.removed_outcome(), entries: Vec::new() };
    let absolute = root.join(real);
    let stat = match fs::symlink_metadata(&absolute) {
        Ok(metadata) => EntryStat::from(&metadata),
        // Deleted while we walk: as if it had never been there.
        Err(error) if is_missing(&error) => return Ok(Walked { outcome: Outcome::Dropped, entries: Vec::new() }),
        Err(error) => return Err(io_error(IoAction::ReadMetadata, absolute, error)),
    };
    let verdict = rules.verdict(real, exclude_path);

    if !stat.is_dir() {
        if verdict.is_removed() {
            return Ok(removed(&verdict));
        }
        return Ok(match leaf_kind(&absolute, &stat)? {
            Some(kind) => Walked { outcome: Outcome::Kept, entries: vec![(String::new(), Found::new(absolute, kind, &stat))] },
            None => Walked { outcome: Outcome::Dropped, entries: Vec::new() },
        });
    }
    if !rules.may_descend(real, exclude_path, &verdict) {
        return Ok(removed(&verdict));
    }
    let below = Below { absolute: &absolute, real, exclude_path, rules }.walk(threads)?;
    // An excluded directory survives only as the parent of something re-included.
    if verdict.is_removed() && below.is_empty() {
        return Ok(removed(&verdict));
    }
    let mut entries = below;
    entries.push((String::new(), Found::new(absolute, FoundKind::Directory, &stat)));
    Ok(Walked { outcome: Outcome::Kept, entries: sorted_by_path(entries) })
}

/// The two rule sets a walk applies.
struct Rules<'a> {
    ignore: &'a DockerIgnore,
    excludes: &'a DockerIgnore,
}

/// What the rules say of one path.
struct Verdict<'a> {
    ignored_by: Option<&'a Pattern>,
    excluded: bool,
}

impl Verdict<'_> {
    fn is_removed(&self) -> bool {
        self.ignored_by.is_some() || self.excluded
    }

    fn removed_outcome(&self) -> Outcome {
        match self.ignored_by {
            Some(rule) => Outcome::Ignored(rule.text.clone(), rule.line),
            None => Outcome::Dropped,
        }
    }
}

impl<'a> Rules<'a> {
    /// No rule in either set: nothing is removed.
    fn is_empty(&self) -> bool {
        self.ignore.patterns().is_empty() && self.excludes.patterns().is_empty()
    }

    fn verdict(&self, real: &str, exclude_path: Option<&str>) -> Verdict<'a> {
        Verdict { ignored_by: self.ignore.excluded_by(real), excluded: exclude_path.is_some_and(|path| self.excludes.is_excluded(path)) }
    }

    /// Whether a directory is entered: it is not removed, or an exception may re-include
    /// something below it.
    fn may_descend(&self, real: &str, exclude_path: Option<&str>, verdict: &Verdict) -> bool {
        (verdict.ignored_by.is_none() || self.ignore.may_include_below(real))
            && (!verdict.excluded || exclude_path.is_some_and(|path| self.excludes.may_include_below(path)))
    }
}

/// A file, or a symlink with its target; `None` for what cannot be copied.
fn leaf_kind(absolute: &Path, stat: &EntryStat) -> Result<Option<FoundKind>, SelectionError> {
    Ok(match stat.kind() {
        libc::S_IFLNK => {
            let target = fs::read_link(absolute).map_err(|error| io_error(IoAction::ReadLink, absolute.to_path_buf(), error))?;
            let target = target.into_os_string().into_string().map_err(|_| SelectionError::NonUtf8Path { path: absolute.to_path_buf() })?;
            Some(FoundKind::Symlink(target))
        }
        libc::S_IFREG => Some(FoundKind::File(stat.stamp)),
        _ => None,
    })
}

/// The part of a walk below a directory that is entered.
struct Below<'a> {
    absolute: &'a Path,
    real: &'a str,
    exclude_path: Option<&'a str>,
    rules: &'a Rules<'a>,
}

/// What the visitor of one thread found; handed over when the thread is done.
#[derive(Default)]
struct Collected {
    /// The thread's open directory, for the `lstat` of the entries in it.
    directory: OpenDirectory,
    kept: Vec<(String, Found)>,
    /// Excluded directories that were entered: kept only as parents of something kept.
    set_aside: Vec<(String, Found)>,
    errors: Vec<(PathBuf, SelectionError)>,
}

impl Below<'_> {
    /// The kept entries below the directory, in any order.
    fn walk(&self, threads: usize) -> Result<Vec<(String, Found)>, SelectionError> {
        let mut builder = WalkBuilder::new(self.absolute);
        builder
            .standard_filters(false)
            .hidden(false)
            .parents(false)
            .ignore(false)
            .git_ignore(false)
            .git_global(false)
            .git_exclude(false)
            .follow_links(false)
            .min_depth(Some(1))
            .threads(threads);
        let shared = Mutex::new(Vec::new());
        builder.build_parallel().visit(&mut VisitorBuilder { below: self, shared: &shared });
        let threads: Vec<Collected> = shared.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut kept = Vec::with_capacity(threads.iter().map(|collected| collected.kept.len()).sum());
        let (mut set_aside, mut errors) = (Vec::new(), Vec::new());
        for collected in threads {
            kept.extend(collected.kept);
            set_aside.extend(collected.set_aside);
            errors.extend(collected.errors);
        }

        if !errors.is_empty() {
            errors.sort_by(|(left, _), (right, _)| left.cmp(right));
            let (_, first) = errors.swap_remove(0);
            return Err(first);
        }
        // Most walks enter no excluded directory: no parents to look for then.
        let parents_of_kept = if set_aside.is_empty() {
            Vec::new()
        } else {
            let mut parents: HashSet<&str> = HashSet::new();
            for (path, _) in &kept {
                let mut rest = path.as_str();
                // Once a parent is known, so are all of its own.
                while let Some((parent, _)) = rest.rsplit_once('/')
                    && parents.insert(parent)
                {
                    rest = parent;
                }
            }
            set_aside.into_iter().filter(|(path, _)| parents.contains(path.as_str())).collect::<Vec<_>>()
        };
        kept.extend(parents_of_kept);
        Ok(kept)
    }

    /// The path of an entry relative to the directory walked; `None` when it is not UTF-8.
    /// `ignore` joins every name it lists onto the path it was given, so the relative path is
    /// what follows that path's bytes (and the separator `Path::join` put after them, unless
    /// the path ended in one: `root.join("")` does); cut there rather than compared component
    /// by component, which showed in the profile.
    fn relative<'p>(&self, absolute: &'p Path) -> Option<&'p str> {
        let bytes = absolute.as_os_str().as_bytes();
        let rest = bytes.get(self.absolute.as_os_str().len()..)?;
        std::str::from_utf8(rest.strip_prefix(b"/").unwrap_or(rest)).ok()
    }

    /// One entry below the directory: kept, set aside or left out; `Skip` for a directory that
    /// is not entered.
    fn visit(&self, entry: Result<DirEntry, ignore::Error>, collected: &mut Collected) -> Result<WalkState, (PathBuf, SelectionError)> {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => return walker_error(error, self.absolute).map_or(Ok(WalkState::Continue), Err),
        };
        let absolute = entry.path();
        let error_here = |error| (absolute.to_path_buf(), error);
        let relative = self.relative(absolute).ok_or_else(|| error_here(SelectionError::NonUtf8Path { path: absolute.to_path_buf() }))?;
        let stat = match collected.directory.lstat(absolute) {
            Ok(stat) => stat,
            // Deleted while we walk: as if it had never been there.
            Err(error) if is_missing(&error) => return Ok(WalkState::Skip),
            Err(error) => return Err(error_here(io_error(IoAction::ReadMetadata, absolute.to_path_buf(), error))),
        };
        // Most walks have no rule at all: then nothing is removed, and the paths the rules
        // are tested against are not made (two strings for every entry).
        let (removed, descend) = if self.rules.is_empty() {
            (false, true)
        } else {
            let real = join(self.real, relative);
            let exclude_path = match self.exclude_path {
                Some(path) => format!("{path}/{relative}"),
                None => relative.to_string(),
            };
            let verdict = self.rules.verdict(&real, Some(&exclude_path));
            (verdict.is_removed(), stat.is_dir() && self.rules.may_descend(&real, Some(&exclude_path), &verdict))
        };

        if stat.is_dir() {
            if !descend {
                return Ok(WalkState::Skip);
            }
            let found = (relative.to_string(), Found::new(absolute.to_path_buf(), FoundKind::Directory, &stat));
            if removed {
                collected.set_aside.push(found)
            } else {
                collected.kept.push(found)
            }
            return Ok(WalkState::Continue);
        }
        if !removed && let Some(kind) = leaf_kind(absolute, &stat).map_err(error_here)? {
            collected.kept.push((relative.to_string(), Found::new(absolute.to_path_buf(), kind, &stat)));
        }
        Ok(WalkState::Continue)
    }
}

/// Entries sorted by path, each moved once: sorting them in place moved every (large) entry
/// about `log n` times, which showed in the profile of a 50,000-file walk. The order is sorted
/// on the rayon pool: alone, it was the longest step after the walk of that context.
fn sorted_by_path(entries: Vec<(String, Found)>) -> Vec<(String, Found)> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.par_sort_unstable_by(|&left, &right| entries[left].0.cmp(&entries[right].0));
    let mut slots: Vec<Option<(String, Found)>> = entries.into_iter().map(Some).collect();
    order.into_iter().filter_map(|index| slots[index].take()).collect()
}

/// An error `ignore` met listing a directory, naming what it names; `None` when that was
/// deleted while the walk ran.
fn walker_error(error: ignore::Error, directory: &Path) -> Option<(PathBuf, SelectionError)> {
    fn named(error: &ignore::Error) -> Option<&Path> {
        match error {
            ignore::Error::WithPath { path, .. } => Some(path),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => named(err),
            _ => None,
        }
    }
    let path = named(&error).unwrap_or(directory).to_path_buf();
    let message = error.to_string();
    let error = error.into_io_error().unwrap_or_else(|| std::io::Error::other(message));
    if is_missing(&error) {
        return None;
    }
    Some((path.clone(), io_error(IoAction::ReadDirectory, path, error)))
}

struct VisitorBuilder<'s> {
    below: &'s Below<'s>,
    shared: &'s Mutex<Vec<Collected>>,
}

impl<'s> ParallelVisitorBuilder<'s> for VisitorBuilder<'s> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor { below: self.below, shared: self.shared, collected: Collected::default() })
    }
}

/// One thread's visitor: collects without locking, hands its findings over when dropped.
struct Visitor<'s> {
    below: &'s Below<'s>,
    shared: &'s Mutex<Vec<Collected>>,
    collected: Collected,
}

impl ParallelVisitor for Visitor<'_> {
    fn visit(&mut self, entry: Result<DirEntry, ignore::Error>) -> WalkState {
        match self.below.visit(entry, &mut self.collected) {
            Ok(state) => state,
            // The walk goes on, so that the error reported is the first in walk order
            // whichever thread met its own first.
            Err(error) => {
                self.collected.errors.push(error);
                WalkState::Skip
            }
        }
    }
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        let collected = std::mem::take(&mut self.collected);
        self.shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(collected);
    }
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
