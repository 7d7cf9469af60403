//! Materializes a [`LayeredView`] as one plain directory tree: the image's root filesystem,
//! for `-o type=local` and `-o type=tar`.
//!
//! Files are either copied (the destination belongs to the user) or hard-linked from the
//! snapshots (a temporary tree inside the state root, read and then deleted; never modified).
//! Hard links inside one layer stay hard links. Ownership is kept where the process may set
//! it and dropped silently where it may not (an unprivileged user writing a local output).

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::view::{LayeredView, Node, is_whiteout_name};

/// How files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// Copies with the image's owners (as root).
    Copy,
    /// Hard links to the snapshots' files (read-only uses).
    HardLink,
    /// Copies owned by whoever runs rbuild: `-o type=local`, as BuildKit's client writes the
    /// files it receives (measured with the oracle: an image's 1000:50 arrives as 0:0 for root).
    CallerCopy,
}

/// Builds the error for an I/O failure on `path`.
fn error(path: &Path) -> impl FnOnce(io::Error) -> FlattenError + use<> {
    let path = path.display().to_string();
    move |source| FlattenError { path, source }
}

#[derive(Debug, thiserror::Error)]
#[error("failed to write `{path}`")]
pub struct FlattenError {
    pub path: String,
    #[source]
    pub source: io::Error,
}

struct Flattener<'a> {
    view: &'a LayeredView,
    mode: FileMode,
    /// (device, inode) of a source file → its first destination, to keep hard links.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories whose times are set last, deepest first, after their contents.
    directories: Vec<(PathBuf, Metadata)>,
    can_chown: bool,
}

/// Writes the view's tree into `destination` (created if missing).
pub fn flatten(view: &LayeredView, destination: &Path, mode: FileMode) -> Result<(), FlattenError> {
    fs::create_dir_all(destination).map_err(error(destination))?;
    let mut flattener = Flattener {
        view,
        mode,
        links: HashMap::new(),
        directories: Vec::new(),
        can_chown: nix::unistd::geteuid().is_root() && mode != FileMode::CallerCopy,
    };
    let root = view.root().map_err(error(destination))?;
    flattener.directory(&root, destination)?;
    for (path, metadata) in flattener.directories.iter().rev() {
        set_times(path, metadata.mtime(), metadata.mtime_nsec()).map_err(error(path))?;
    }
    Ok(())
}

impl Flattener<'_> {
    fn directory(&mut self, node: &Node, destination: &Path) -> Result<(), FlattenError> {
        let entries = self.view.read_dir(node).map_err(error(destination))?;
        for (name, child) in entries {
            if is_whiteout_name(&name) {
                continue;
            }
            let target = destination.join(&name);
            self.entry(&child, &target)?;
        }
        Ok(())
    }

    fn entry(&mut self, node: &Node, target: &Path) -> Result<(), FlattenError> {
        match node {
            Node::Missing => Ok(()),
            Node::Directory { metadata, .. } => {
                match fs::symlink_metadata(target) {
                    Ok(existing) if existing.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(target).map_err(error(target))?;
                        fs::create_dir(target).map_err(error(target))?;
                    }
                    Err(_) => fs::create_dir(target).map_err(error(target))?,
                }
                // Writable while we fill it; the real mode is set below, after the contents.
                fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(error(target))?;
                self.directory(node, target)?;
                self.owner(target, metadata).map_err(error(target))?;
                fs::set_permissions(target, fs::Permissions::from_mode(metadata.mode() & 0o7777)).map_err(error(target))?;
                self.directories.push((target.to_path_buf(), metadata.clone()));
                Ok(())
            }
            Node::Leaf { path, metadata } => {
                // What is there already (a second export into the same directory) gives way.
                match fs::symlink_metadata(target) {
                    Ok(existing) if existing.is_dir() => crate::store::remove_tree(target).map_err(error(target))?,
                    Ok(_) => fs::remove_file(target).map_err(error(target))?,
                    Err(_) => {}
                }
                let key = (metadata.dev(), metadata.ino());
                if metadata.nlink() > 1 && !metadata.is_dir() {
                    if let Some(first) = self.links.get(&key) {
                        return fs::hard_link(first, target).map_err(error(target));
                    }
                    self.links.insert(key, target.to_path_buf());
                }
                let file_type = metadata.file_type();
                if file_type.is_symlink() {
                    let link = fs::read_link(path).map_err(error(path))?;
                    symlink(&link, target).map_err(error(target))?;
                    self.owner(target, metadata).map_err(error(target))?;
                    return set_times(target, metadata.mtime(), metadata.mtime_nsec()).map_err(error(target));
                }
                if file_type.is_file() {
                    if self.mode == FileMode::HardLink {
                        return fs::hard_link(path, target).map_err(error(target));
                    }
                    fs::copy(path, target).map_err(error(target))?;
                } else {
                    // Devices and fifos.
                    let kind = nix::sys::stat::SFlag::from_bits_truncate(metadata.mode() & libc::S_IFMT);
                    let permissions = nix::sys::stat::Mode::from_bits_truncate(metadata.mode() & 0o7777);
                    nix::sys::stat::mknod(target, kind, permissions, metadata.rdev())
                        .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
                        .map_err(error(target))?;
                }
                self.owner(target, metadata).map_err(error(target))?;
                fs::set_permissions(target, fs::Permissions::from_mode(metadata.mode() & 0o7777)).map_err(error(target))?;
                copy_xattrs(path, target);
                set_times(target, metadata.mtime(), metadata.mtime_nsec()).map_err(error(target))
            }
        }
    }

    fn owner(&self, target: &Path, metadata: &Metadata) -> io::Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid()))
    }
}

fn copy_xattrs(source: &Path, target: &Path) {
    let Ok(names) = xattr::list(source) else { return };
    for name in names {
        if name.to_string_lossy().contains("overlay.") {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(source, &name) {
            // Best effort: security.* needs privileges the caller may not have.
            let _ = xattr::set(target, &name, &value);
        }
    }
}

/// Sets access and modification times to `seconds.nanos` without following symlinks.
pub fn set_times(path: &Path, seconds: i64, nanos: i64) -> io::Result<()> {
    let time = nix::sys::time::TimeSpec::new(seconds, nanos);
    nix::sys::stat::utimensat(None, path, &time, &time, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_applies_whiteouts_and_keeps_links() {
        let base = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        fs::create_dir_all(base.path().join("a")).unwrap();
        fs::write(base.path().join("a/old"), "old").unwrap();
        fs::write(base.path().join("a/kept"), "kept").unwrap();
        fs::create_dir_all(upper.path().join("a")).unwrap();
        nix::sys::stat::mknod(&upper.path().join("a/old"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .expect("mknod of a whiteout needs root (tests run as root)");
        fs::write(upper.path().join("a/one"), "x").unwrap();
        fs::hard_link(upper.path().join("a/one"), upper.path().join("a/two")).unwrap();
        symlink("kept", upper.path().join("a/link")).unwrap();
        fs::set_permissions(upper.path().join("a"), fs::Permissions::from_mode(0o555)).unwrap();

        let view = LayeredView::new([base.path().to_path_buf(), upper.path().to_path_buf()]);
        let out = tempfile::tempdir().unwrap();
        flatten(&view, out.path(), FileMode::Copy).unwrap();
        let a = out.path().join("a");
        let mut names: Vec<_> = fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["kept", "link", "one", "two"]);
        assert_eq!(fs::metadata(&a).unwrap().mode() & 0o777, 0o555);
        assert_eq!(fs::metadata(a.join("one")).unwrap().ino(), fs::metadata(a.join("two")).unwrap().ino());
        assert_eq!(fs::read_link(a.join("link")).unwrap(), Path::new("kept"));
        fs::set_permissions(upper.path().join("a"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
