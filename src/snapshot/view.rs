//! A read-only merged view of a stack of snapshot directories, with overlayfs semantics but
//! without mounting anything (so it works for any user, in any namespace).
//!
//! Layers are given bottom first. A name in a higher layer hides the same name below; a
//! whiteout (character device 0/0) hides it and everything under it; a directory marked opaque
//! (`user.overlay.opaque` or `trusted.overlay.opaque` = `y`) hides the directories below it.
//! Paths are resolved inside the view by the shared resolver (`oci::root_path`): `..` never
//! climbs above `/`, and symlinks are followed against the view's root, never the host's.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::oci::root_path::{self, Kind, Resolution, Tree};

#[derive(Debug, Clone)]
pub struct LayeredView {
    /// Top first.
    layers: Vec<PathBuf>,
}

/// What a path is in the view.
#[derive(Debug, Clone)]
pub enum Node {
    Missing,
    /// A directory, with the real directories that make it up, top first.
    Directory {
        stack: Vec<PathBuf>,
        metadata: Metadata,
    },
    /// A file, symlink, device or fifo, with its real path in the top-most layer that has it.
    Leaf {
        path: PathBuf,
        metadata: Metadata,
    },
}

impl Node {
    pub fn metadata(&self) -> Option<&Metadata> {
        match self {
            Node::Missing => None,
            Node::Directory { metadata, .. } | Node::Leaf { metadata, .. } => Some(metadata),
        }
    }

    pub fn is_directory(&self) -> bool {
        matches!(self, Node::Directory { .. })
    }

    pub fn exists(&self) -> bool {
        !matches!(self, Node::Missing)
    }
}

pub fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

pub fn is_opaque(path: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"].iter().any(|name| matches!(xattr::get(path, name), Ok(Some(value)) if value == b"y"))
}

fn lstat(path: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) if error.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(error) => Err(error),
    }
}

impl LayeredView {
    /// `layers` bottom first, as an image lists them.
    pub fn new(layers: impl IntoIterator<Item = PathBuf>) -> LayeredView {
        let mut layers: Vec<PathBuf> = layers.into_iter().collect();
        layers.reverse();
        LayeredView { layers }
    }

    pub fn root(&self) -> io::Result<Node> {
        let metadata = match self.layers.first() {
            Some(top) => fs::symlink_metadata(top)?,
            // An empty view still has a root directory; any directory's metadata stands in.
            None => fs::symlink_metadata("/")?,
        };
        Ok(Node::Directory { stack: self.layers.clone(), metadata })
    }

    /// The child `name` of a directory node.
    pub fn child(&self, directory: &Node, name: &OsStr) -> io::Result<Node> {
        let Node::Directory { stack, .. } = directory else { return Ok(Node::Missing) };
        let mut found: Option<Node> = None;
        let mut child_stack = Vec::new();
        let mut child_metadata = None;
        for layer_directory in stack {
            let path = layer_directory.join(name);
            let Some(metadata) = lstat(&path)? else { continue };
            if found.is_none() && child_metadata.is_none() {
                if is_whiteout(&metadata) {
                    return Ok(Node::Missing);
                }
                if !metadata.is_dir() {
                    found = Some(Node::Leaf { path, metadata });
                    break;
                }
                let opaque = is_opaque(&path);
                child_stack.push(path);
                child_metadata = Some(metadata);
                if opaque {
                    break;
                }
                continue;
            }
            // Below the top-most directory: merge lower directories until something hides them.
            if !metadata.is_dir() {
                break;
            }
            let opaque = is_opaque(&path);
            child_stack.push(path);
            if opaque {
                break;
            }
        }
        if let Some(node) = found {
            return Ok(node);
        }
        match child_metadata {
            Some(metadata) => Ok(Node::Directory { stack: child_stack, metadata }),
            None => Ok(Node::Missing),
        }
    }

    /// The entries of a directory node, by name, whiteouts applied.
    pub fn read_dir(&self, directory: &Node) -> io::Result<BTreeMap<OsString, Node>> {
        let mut names: BTreeMap<OsString, ()> = BTreeMap::new();
        if let Node::Directory { stack, .. } = directory {
            for layer_directory in stack {
                for entry in fs::read_dir(layer_directory)? {
                    names.insert(entry?.file_name(), ());
                }
            }
        }
        let mut entries = BTreeMap::new();
        for name in names.into_keys() {
            let node = self.child(directory, &name)?;
            if node.exists() {
                entries.insert(name, node);
            }
        }
        Ok(entries)
    }

    /// Resolves an absolute path in the view. Symlinks in the parents are always followed;
    /// the last component's only when `follow_last`. Returns the node and the resolved path
    /// (for a missing node, as far as it got: see [`Resolution::Missing`]).
    pub fn resolve(&self, path: &str, follow_last: bool) -> io::Result<(Node, String)> {
        Ok(match root_path::resolve(self, path, follow_last)? {
            Resolution::Found { path, entry } => (entry, format!("/{path}")),
            Resolution::Missing { path } => (Node::Missing, format!("/{path}")),
            Resolution::Stopped(never) => match never {},
            Resolution::TooManyLinks => return Err(io::Error::from_raw_os_error(libc::ELOOP)),
        })
    }

    /// The contents of a regular file, following symlinks.
    pub fn read_file(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.resolve(path, true)?.0 {
            Node::Leaf { path, metadata } if metadata.is_file() => fs::read(path).map(Some),
            _ => Ok(None),
        }
    }
}

/// The view as the shared resolver's tree. `..` after a file steps back out of it (`file/..`
/// is the file's directory) rather than making the path missing as the host tree does: the
/// view has always resolved so, and destinations and sources resolve through it.
impl Tree for LayeredView {
    type Entry = Node;
    const DOT_DOT_LEAVES_NON_DIRECTORIES: bool = true;

    fn root(&self) -> io::Result<Node> {
        LayeredView::root(self)
    }

    fn lookup(&self, directory: &Node, name: &str, _path: &str) -> io::Result<Option<Node>> {
        Ok(Some(self.child(directory, OsStr::new(name))?).filter(Node::exists))
    }

    fn kind(&self, node: &Node) -> Kind {
        match node {
            Node::Directory { .. } => Kind::Directory,
            Node::Leaf { metadata, .. } if metadata.file_type().is_symlink() => Kind::Symlink,
            Node::Leaf { .. } | Node::Missing => Kind::Other,
        }
    }

    fn read_link(&self, node: &Node, _path: &str) -> io::Result<String> {
        match node {
            Node::Leaf { path, .. } => Ok(fs::read_link(path)?.to_string_lossy().into_owned()),
            // What readlink(2) says of anything that is no link.
            Node::Directory { .. } | Node::Missing => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

/// Whether a name is one an image must never contain (`.wh.` files are OCI whiteout markers).
pub fn is_whiteout_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".wh.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn whiteout(path: &Path) {
        nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .expect("mknod of a whiteout needs root or a user namespace (tests run as root)");
    }

    #[test]
    fn upper_layers_hide_lower_ones() {
        let base = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        fs::create_dir_all(base.path().join("etc/dir")).unwrap();
        fs::write(base.path().join("etc/dir/a"), "a").unwrap();
        fs::write(base.path().join("etc/passwd"), "old").unwrap();
        fs::write(base.path().join("etc/gone"), "x").unwrap();
        fs::create_dir_all(base.path().join("opaque/sub")).unwrap();
        fs::create_dir_all(upper.path().join("etc")).unwrap();
        fs::write(upper.path().join("etc/passwd"), "new").unwrap();
        whiteout(&upper.path().join("etc/gone"));
        fs::create_dir_all(upper.path().join("opaque")).unwrap();
        xattr::set(upper.path().join("opaque"), "user.overlay.opaque", b"y").unwrap();
        fs::write(upper.path().join("opaque/top"), "t").unwrap();

        let view = LayeredView::new([base.path().to_path_buf(), upper.path().to_path_buf()]);
        assert_eq!(view.read_file("/etc/passwd").unwrap().unwrap(), b"new");
        assert!(!view.resolve("/etc/gone", false).unwrap().0.exists());
        assert_eq!(view.read_file("/etc/dir/a").unwrap().unwrap(), b"a");
        let etc = view.resolve("/etc", true).unwrap().0;
        let names: Vec<_> = view.read_dir(&etc).unwrap().into_keys().collect();
        assert_eq!(names, ["dir", "passwd"]);
        let opaque = view.resolve("/opaque", true).unwrap().0;
        let names: Vec<_> = view.read_dir(&opaque).unwrap().into_keys().collect();
        assert_eq!(names, ["top"]);
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let layer = tempfile::tempdir().unwrap();
        fs::create_dir_all(layer.path().join("usr/bin")).unwrap();
        fs::write(layer.path().join("usr/bin/tool"), "t").unwrap();
        symlink("usr/bin", layer.path().join("bin")).unwrap();
        symlink("/../../../../etc", layer.path().join("escape")).unwrap();
        symlink("loop", layer.path().join("loop")).unwrap();
        let view = LayeredView::new([layer.path().to_path_buf()]);
        let (node, resolved) = view.resolve("/bin/tool", true).unwrap();
        assert!(node.exists());
        assert_eq!(resolved, "/usr/bin/tool");
        // The host's /etc is never reached: the link resolves to the view's /etc, missing here.
        let (node, resolved) = view.resolve("/escape/passwd", true).unwrap();
        assert!(!node.exists());
        assert_eq!(resolved, "/etc/passwd");
        let error = view.resolve("/loop", true).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
        let (node, _) = view.resolve("/bin", false).unwrap();
        assert!(matches!(node, Node::Leaf { .. }));
    }
}
