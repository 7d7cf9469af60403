//! Paths resolved inside a root, symlinks followed as BuildKit's scoped lookups follow them
//! (`fs.RootPath`, fsutil's copy): component by component, an absolute target starts again at
//! the root and `..` never climbs above it, so nothing outside the root is ever reached. The
//! walk is written once, here; each user plugs in its own [`Tree`]: the build context's host
//! directory (`context::in_root`), a stack of layer directories with whiteouts
//! (`snapshot::view`, which copies, mounts and exporters resolve in).
//!
//! Invariants: a found path is relative to the root and clean (no empty, `.` or `..` part;
//! `""` is the root itself), and no component of it is a symlink but the last, when that one
//! was not to be followed. One lookup follows at most [`MAX_LINKS`] links.
//!
//! Decisions:
//! - The limit is Linux's 40 (`ELOOP`), which rbuild has always used, not the 255 of BuildKit's
//!   resolver: a chain of 41 to 255 links that BuildKit follows is an error here.
//! - A name that does not exist, or lies below a non-directory, makes the path
//!   [`Resolution::Missing`], with the path as far as it got; BuildKit's `RootPath` instead
//!   treats a missing component as a plain name and goes on lexically. Callers that create
//!   what is missing (a copy's destination) use that path.
//! - A link's target is read only when the link is followed, after `before_link` and the limit
//!   agreed, so a link that is only named costs no `readlink`.

use std::convert::Infallible;
use std::io;
use std::ops::ControlFlow;

/// Symlinks followed in one lookup before it gives up, as Linux does (`ELOOP`).
const MAX_LINKS: usize = 40;

/// What an entry of a [`Tree`] is, as far as resolution cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Directory,
    Symlink,
    /// A regular file, a device, a fifo, a socket.
    Other,
}

/// A directory tree that paths are resolved in.
pub(crate) trait Tree {
    /// One entry as the tree knows it. A directory's entry is handed back to look up its
    /// children; the last one is the result.
    type Entry;

    /// Whether `..` right after a non-directory steps back out of it (`file/..` is the
    /// directory that holds `file`), as a lexical walk does. When `false`, a non-directory
    /// before the last component makes the path missing, as the kernel's `ENOTDIR` does.
    const DOT_DOT_LEAVES_NON_DIRECTORIES: bool = false;

    /// The root directory.
    fn root(&self) -> io::Result<Self::Entry>;

    /// The entry `name` of `directory`; `path` is that entry's own path (relative to the root,
    /// clean). `None` when there is no such entry, or `directory` is no directory.
    fn lookup(&self, directory: &Self::Entry, name: &str, path: &str) -> io::Result<Option<Self::Entry>>;

    fn kind(&self, entry: &Self::Entry) -> Kind;

    /// The target of the symlink `entry` at `path`, as text (a target that is not UTF-8 is
    /// read lossily, so it leads nowhere).
    fn read_link(&self, entry: &Self::Entry, path: &str) -> io::Result<String>;
}

/// Where a path leads inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution<Entry, Stop = Infallible> {
    /// The real path, with the entry there.
    Found { path: String, entry: Entry },
    /// Nothing there. `path` is the real path of the parents that exist, then the name that
    /// does not (or is no directory) and the rest of the path as it stood, unresolved.
    Missing { path: String },
    /// `before_link` stopped at a link, and said this.
    Stopped(Stop),
    /// More than [`MAX_LINKS`] links on the way.
    TooManyLinks,
}

/// Resolves the `/`-separated `path` in `tree` (a leading `/` means the root too). Symlinks
/// before the last component are always followed, the last component's only when
/// `follow_last`.
pub(crate) fn resolve<T: Tree>(tree: &T, path: &str, follow_last: bool) -> io::Result<Resolution<T::Entry>> {
    resolve_with(tree, path, follow_last, &mut |_| ControlFlow::Continue(()))
}

/// [`resolve`], asking `before_link` before each link is followed, with the link's own path
/// (relative to the root); `Break` stops the walk there with what it carries.
pub(crate) fn resolve_with<T: Tree, Stop>(
    tree: &T,
    path: &str,
    follow_last: bool,
    before_link: &mut dyn FnMut(&str) -> ControlFlow<Stop>,
) -> io::Result<Resolution<T::Entry, Stop>> {
    // What is left to walk, next part last.
    let mut remaining = Vec::new();
    push_parts(&mut remaining, path);
    // The real path so far, with the entry of each of its names.
    let root = tree.root()?;
    let mut names: Vec<String> = Vec::new();
    let mut entries: Vec<T::Entry> = Vec::new();
    let mut links_followed = 0;
    while let Some(name) = remaining.pop() {
        if name == ".." {
            names.pop();
            entries.pop();
            continue;
        }
        let entry_path = join(&names, &name);
        let directory = entries.last().unwrap_or(&root);
        let Some(entry) = tree.lookup(directory, &name, &entry_path)? else {
            return Ok(Resolution::Missing { path: missing_path(names, name, remaining) });
        };
        let is_last = remaining.is_empty();
        match tree.kind(&entry) {
            Kind::Symlink if follow_last || !is_last => {
                if let ControlFlow::Break(stop) = before_link(&entry_path) {
                    return Ok(Resolution::Stopped(stop));
                }
                links_followed += 1;
                if links_followed > MAX_LINKS {
                    return Ok(Resolution::TooManyLinks);
                }
                let target = tree.read_link(&entry, &entry_path)?;
                if target.starts_with('/') {
                    names.clear();
                    entries.clear();
                }
                push_parts(&mut remaining, &target);
                continue;
            }
            Kind::Directory => {}
            // Only an unfollowed link can be here as a link: the last component.
            Kind::Symlink | Kind::Other => {
                if !is_last && !T::DOT_DOT_LEAVES_NON_DIRECTORIES {
                    return Ok(Resolution::Missing { path: missing_path(names, name, remaining) });
                }
            }
        }
        names.push(name);
        entries.push(entry);
    }
    let entry = entries.pop().unwrap_or(root);
    Ok(Resolution::Found { path: names.join("/"), entry })
}

/// Pushes the parts of `path` onto the stack `remaining`, first part last; empty and `.` parts
/// mean nothing.
fn push_parts(remaining: &mut Vec<String>, path: &str) {
    remaining.extend(path.split('/').rev().filter(|part| !part.is_empty() && *part != ".").map(str::to_string));
}

fn join(names: &[String], name: &str) -> String {
    if names.is_empty() { name.to_string() } else { format!("{}/{name}", names.join("/")) }
}

/// The resolved `names`, the missing `name`, then what was left to walk in its order.
fn missing_path(mut names: Vec<String>, name: String, mut remaining: Vec<String>) -> String {
    names.push(name);
    remaining.reverse();
    names.extend(remaining);
    names.join("/")
}

/// `relative` (clean, `/`-separated, `""` for `root` itself) below the directory `root`, opened
/// read-only by the kernel without following any symlink and without leaving `root`
/// (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`): for trees rbuild wrote itself,
/// where a symlink on the way means the path is not what the caller thinks, never a link to
/// follow.
#[allow(unsafe_code)] // nix's `openat2` hands back a raw descriptor for the caller to own
pub(crate) fn open_beneath(root: &std::fs::File, relative: &std::path::Path) -> io::Result<std::fs::File> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    use std::os::fd::{AsRawFd, FromRawFd};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let path = if relative.as_os_str().is_empty() { std::path::Path::new(".") } else { relative };
    let fd = openat2(root.as_raw_fd(), path, how).map_err(|errno| io::Error::from_raw_os_error(errno as i32))?;
    // SAFETY: `openat2` returned a new descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A tree in memory: path → a directory, a file or a link target. `LEXICAL` is its
    /// [`Tree::DOT_DOT_LEAVES_NON_DIRECTORIES`].
    struct Fake<const LEXICAL: bool = false>(BTreeMap<&'static str, Option<&'static str>>);

    const DIRECTORY: Option<&str> = None;

    impl Fake {
        /// `entries`: `path/` a directory, `path -> target` a link, `path` a file.
        fn new(entries: &[&'static str]) -> Fake {
            Fake(
                entries
                    .iter()
                    .map(|entry| match entry.split_once(" -> ") {
                        Some((path, target)) => (path, Some(target)),
                        None => match entry.strip_suffix('/') {
                            Some(path) => (path, DIRECTORY),
                            None => (*entry, Some("")),
                        },
                    })
                    .collect(),
            )
        }

        fn lexical(self) -> Fake<true> {
            Fake(self.0)
        }

        fn resolve(&self, path: &str, follow_last: bool) -> Resolution<Kind> {
            resolve(self, path, follow_last).unwrap()
        }
    }

    impl<const LEXICAL: bool> Tree for Fake<LEXICAL> {
        type Entry = Kind;
        const DOT_DOT_LEAVES_NON_DIRECTORIES: bool = LEXICAL;

        fn root(&self) -> io::Result<Kind> {
            Ok(Kind::Directory)
        }

        fn lookup(&self, directory: &Kind, _name: &str, path: &str) -> io::Result<Option<Kind>> {
            if *directory != Kind::Directory {
                return Ok(None);
            }
            Ok(self.0.get(path).map(|entry| match entry {
                None => Kind::Directory,
                Some("") => Kind::Other,
                Some(_) => Kind::Symlink,
            }))
        }

        fn kind(&self, entry: &Kind) -> Kind {
            *entry
        }

        fn read_link(&self, _entry: &Kind, path: &str) -> io::Result<String> {
            Ok(self.0[path].unwrap_or_default().to_string())
        }
    }

    fn found(path: &str, entry: Kind) -> Resolution<Kind> {
        Resolution::Found { path: path.to_string(), entry }
    }

    fn missing(path: &str) -> Resolution<Kind> {
        Resolution::Missing { path: path.to_string() }
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let tree = Fake::new(&[
            "etc/",
            "etc/passwd",
            "usr/",
            "usr/bin/",
            "usr/bin/tool",
            "bin -> usr/bin",
            "absolute -> /etc/passwd",
            "climbing -> ../../../../etc/passwd",
            "chain -> bin",
            "relative -> ../etc",
            "usr/up -> ../../etc",
        ]);
        assert_eq!(tree.resolve("/bin/tool", true), found("usr/bin/tool", Kind::Other));
        assert_eq!(tree.resolve("absolute", true), found("etc/passwd", Kind::Other), "an absolute link starts again at the root");
        assert_eq!(tree.resolve("climbing", true), found("etc/passwd", Kind::Other), "`..` stops at the root");
        assert_eq!(tree.resolve("../../etc/./passwd", true), found("etc/passwd", Kind::Other));
        assert_eq!(tree.resolve("relative/passwd", true), found("etc/passwd", Kind::Other));
        assert_eq!(tree.resolve("chain/tool", true), found("usr/bin/tool", Kind::Other), "a link to a link");
        assert_eq!(tree.resolve("usr/up/passwd", true), found("etc/passwd", Kind::Other), "`..` in a link leaves its directory");
        assert_eq!(tree.resolve("bin/..", true), found("usr", Kind::Directory), "`..` leaves the link's target, not the link");
        assert_eq!(tree.resolve("", true), found("", Kind::Directory));
        assert_eq!(tree.resolve("/", false), found("", Kind::Directory));
    }

    #[test]
    fn the_last_component_is_followed_only_when_asked() {
        let tree = Fake::new(&["usr/", "usr/bin/", "bin -> usr/bin", "dir/", "dir/link -> /bin"]);
        assert_eq!(tree.resolve("bin", false), found("bin", Kind::Symlink));
        assert_eq!(tree.resolve("bin/", false), found("bin", Kind::Symlink), "a trailing `/` is no component");
        assert_eq!(tree.resolve("bin", true), found("usr/bin", Kind::Directory));
        assert_eq!(tree.resolve("bin/.", false), found("bin", Kind::Symlink));
        assert_eq!(tree.resolve("dir/link", false), found("dir/link", Kind::Symlink));
        // A link's own target is walked under the same rule: the chain's last link is kept.
        let tree = Fake::new(&["a -> b", "b -> c", "c/"]);
        assert_eq!(tree.resolve("a", false), found("a", Kind::Symlink));
        assert_eq!(tree.resolve("a", true), found("c", Kind::Directory));
    }

    #[test]
    fn missing_paths_say_how_far_they_got() {
        let tree = Fake::new(&["etc/", "file", "dangling -> /nowhere/x", "dir -> etc"]);
        assert_eq!(tree.resolve("etc/missing/../x", true), missing("etc/missing/../x"));
        assert_eq!(tree.resolve("dangling", true), missing("nowhere/x"), "a dangling link is missing where it points");
        assert_eq!(tree.resolve("dangling", false), found("dangling", Kind::Symlink));
        assert_eq!(tree.resolve("dir/new", true), missing("etc/new"));
        assert_eq!(tree.resolve("file/x", true), missing("file/x"), "nothing is below a file");
        assert_eq!(tree.resolve("file/..", true), missing("file/.."), "`..` does not undo a file, as in the kernel");
    }

    #[test]
    fn a_lexical_tree_lets_dot_dot_leave_a_file() {
        let tree = Fake::new(&["etc/", "etc/file", "etc/other"]).lexical();
        assert_eq!(resolve(&tree, "etc/file/../other", true).unwrap(), found("etc/other", Kind::Other));
        assert_eq!(resolve(&tree, "etc/file/..", true).unwrap(), found("etc", Kind::Directory));
        assert_eq!(resolve(&tree, "etc/file/x", true).unwrap(), missing("etc/file/x"), "still nothing below a file");
    }

    #[test]
    fn loops_and_long_chains_stop_at_the_limit() {
        let tree = Fake::new(&["loop -> loop", "a -> b", "b -> a", "dir/", "self -> ./self/x"]);
        assert_eq!(tree.resolve("loop", true), Resolution::TooManyLinks);
        assert_eq!(tree.resolve("a/x", false), Resolution::TooManyLinks);
        assert_eq!(tree.resolve("self", true), Resolution::TooManyLinks);
        assert_eq!(tree.resolve("loop", false), found("loop", Kind::Symlink), "an unfollowed loop is just a link");
        // MAX_LINKS links in a row are followed; one more is too many.
        let links: Vec<String> = (0..=MAX_LINKS).map(|index| format!("l{index} -> l{}", index + 1)).collect();
        let mut entries: Vec<&'static str> = links.into_iter().map(|link| &*link.leak()).collect();
        entries.push("l41/");
        let tree = Fake::new(&entries);
        assert_eq!(tree.resolve("l1", true), found("l41", Kind::Directory));
        assert_eq!(tree.resolve("l0", true), Resolution::TooManyLinks);
    }

    #[test]
    fn before_link_may_stop_the_walk() {
        let tree = Fake::new(&["etc/", "dir -> etc", "etc/link -> /etc"]);
        let mut seen = Vec::new();
        let mut stop_at_link = |link: &str| {
            seen.push(link.to_string());
            if link == "etc/link" { ControlFlow::Break(link.to_string()) } else { ControlFlow::Continue(()) }
        };
        assert_eq!(resolve_with(&tree, "dir/link/x", true, &mut stop_at_link).unwrap(), Resolution::Stopped("etc/link".to_string()));
        assert_eq!(seen, ["dir", "etc/link"]);
        let mut never = |_: &str| -> ControlFlow<()> { panic!("no link is followed") };
        assert_eq!(resolve_with(&tree, "dir", false, &mut never).unwrap(), Resolution::Found { path: "dir".into(), entry: Kind::Symlink });
    }

    #[test]
    fn open_beneath_follows_no_symlink_and_stays_below() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("a", root.path().join("link")).unwrap();
        let directory = std::fs::File::open(root.path()).unwrap();
        let open = |relative: &str| open_beneath(&directory, std::path::Path::new(relative));
        assert!(open("a/b/f").is_ok());
        assert!(open("").is_ok());
        assert!(open("link/b/f").is_err());
        assert!(open("link").is_err());
        assert!(open("a/../../etc").is_err());
    }
}
