//! Path work inside the step's mounted rootfs, with symlinks resolved as the container sees them.
//!
//! Every lookup goes through `openat2(RESOLVE_IN_ROOT)` from a descriptor of the rootfs, so an
//! image's `/etc/passwd -> /host/secret` or `/work -> ../../..` stays inside the rootfs. Everything
//! is created through the overlay mount, so it lands in the upperdir as ordinary changes.
//!
//! Mount-point stubs: libcontainer needs a file or directory at every mount destination. The
//! runner creates the missing ones itself (recording each new path and its parent's times) before
//! the container starts, and after it stops removes those still empty and restores the parent's
//! times, as BuildKit's mount stub cleaner does. A stub the step wrote into stays: it is content.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::time::TimeSpec;

use super::{SandboxError, sys};

/// An open rootfs directory.
pub(crate) struct Root {
    directory: OwnedFd,
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StubKind {
    Directory,
    File,
}

/// A path the runner created only to mount over it.
#[derive(Debug, Clone)]
pub(crate) struct Stub {
    /// Absolute path inside the container.
    pub path: String,
    kind: StubKind,
    /// atime/mtime of the parent directory before the stub was created.
    parent_times: Option<[TimeSpec; 2]>,
}

/// Components of an absolute container path, without empty and `.` parts.
fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").collect()
}

fn cstring(text: &str) -> Result<CString, SandboxError> {
    CString::new(text).map_err(|_| SandboxError::InvalidStep { reason: format!("path `{text}` contains a NUL byte") })
}

impl Root {
    pub(crate) fn open(path: &Path) -> Result<Root, SandboxError> {
        let file = File::open(path).map_err(|error| SandboxError::io(format!("open rootfs `{}`", path.display()), error))?;
        Ok(Root { directory: OwnedFd::from(file), path: path.to_path_buf() })
    }

    /// `openat2(root, relative, flags, RESOLVE_IN_ROOT)`; "" opens the root itself.
    fn open_in_root(&self, parts: &[&str], flags: OFlag) -> std::io::Result<OwnedFd> {
        let relative = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
        let relative = CString::new(relative).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        sys::open_in_root(self.directory.as_fd(), &relative, flags)
    }

    /// Reads a file of the container; `None` when it does not exist.
    pub(crate) fn read_to_string(&self, path: &str) -> Result<Option<String>, SandboxError> {
        match self.open_in_root(&components(path), OFlag::O_RDONLY) {
            Ok(fd) => {
                let mut bytes = Vec::new();
                File::from(fd).read_to_end(&mut bytes).map_err(|error| SandboxError::io(format!("read `{path}` of the rootfs"), error))?;
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) || error.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(error) => Err(SandboxError::io(format!("open `{path}` of the rootfs"), error)),
        }
    }

    fn exists(&self, parts: &[&str]) -> bool {
        self.open_in_root(parts, OFlag::O_PATH).is_ok()
    }

    /// `mkdir -p` inside the rootfs; new directories get mode 0755 and `owner`. Returns the
    /// created paths, outermost first, each with its parent's times from before the creation.
    pub(crate) fn create_dir_all(&self, path: &str, owner: (u32, u32)) -> Result<Vec<Stub>, SandboxError> {
        let parts = components(path);
        let mut created = Vec::new();
        for index in 0..parts.len() {
            if self.exists(&parts[..=index]) {
                continue;
            }
            created.push(self.create_entry(&parts[..=index], StubKind::Directory, owner)?);
        }
        let final_directory = self.open_in_root(&parts, OFlag::O_PATH | OFlag::O_DIRECTORY);
        final_directory.map_err(|error| SandboxError::io(format!("create directory `{path}` in the rootfs"), error))?;
        Ok(created)
    }

    /// Creates whatever is missing for a mount destination: parent directories, then an empty
    /// directory or file. Returns what was created.
    pub(crate) fn create_stub(&self, path: &str, kind: StubKind) -> Result<Vec<Stub>, SandboxError> {
        let parts = components(path);
        if parts.is_empty() || self.exists(&parts) {
            return Ok(Vec::new());
        }
        let mut created = self.create_dir_all(&format!("/{}", parts[..parts.len() - 1].join("/")), (0, 0))?;
        created.push(self.create_entry(&parts, kind, (0, 0))?);
        Ok(created)
    }

    fn create_entry(&self, parts: &[&str], kind: StubKind, owner: (u32, u32)) -> Result<Stub, SandboxError> {
        let path = format!("/{}", parts.join("/"));
        let context = |error| SandboxError::io(format!("create `{path}` in the rootfs"), error);
        let (name, parent_parts) = parts.split_last().ok_or_else(|| SandboxError::InvalidStep { reason: "empty path".into() })?;
        let parent = self.open_in_root(parent_parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(context)?;
        let parent_times = sys::times(parent.as_fd()).ok();
        let name = cstring(name)?;
        match kind {
            StubKind::Directory => sys::make_directory_at(parent.as_fd(), &name, 0o755),
            StubKind::File => sys::create_file_at(parent.as_fd(), &name, 0o644),
        }
        .map_err(context)?;
        if owner != (0, 0) {
            sys::chown_at(parent.as_fd(), &name, owner.0, owner.1).map_err(context)?;
        }
        Ok(Stub { path, kind, parent_times })
    }

    /// Removes the stubs that are still empty, innermost first, and restores their parents' times.
    /// Returns the paths removed.
    pub(crate) fn remove_stubs(&self, stubs: &[Stub]) -> Vec<String> {
        let mut removed = Vec::new();
        for stub in stubs.iter().rev() {
            let parts = components(&stub.path);
            let Some((name, parent_parts)) = parts.split_last() else {
                continue;
            };
            let Ok(parent) = self.open_in_root(parent_parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
                continue;
            };
            let Ok(name) = cstring(name) else { continue };
            let Ok(stat) = sys::stat_at(parent.as_fd(), &name) else { continue };
            let gone = match stub.kind {
                StubKind::Directory if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => sys::remove_at(parent.as_fd(), &name, true).is_ok(),
                StubKind::File if stat.st_mode & libc::S_IFMT == libc::S_IFREG && stat.st_size == 0 => {
                    sys::remove_at(parent.as_fd(), &name, false).is_ok()
                }
                _ => false,
            };
            if gone {
                if let Some(times) = &stub.parent_times {
                    let _ = sys::set_times(parent.as_fd(), times);
                }
                removed.push(stub.path.clone());
            }
        }
        removed
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn reads_follow_symlinks_inside_the_root_only() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "host").unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("secret"), "inside").unwrap();
        // An absolute target resolves against the rootfs, not the host.
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../secret", root.path().join("etc/passwd")).unwrap();
        let opened = Root::open(root.path()).unwrap();
        assert_eq!(opened.read_to_string("/etc/passwd").unwrap().as_deref(), Some("inside"));
        assert_eq!(opened.read_to_string("/etc/abs").unwrap(), None);
        assert_eq!(opened.read_to_string("/etc/group").unwrap(), None);
    }

    #[test]
    fn stubs_are_created_and_removed_with_parent_times_restored() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        let old = TimeSpec::new(1_000_000, 0);
        let etc = File::open(root.path().join("etc")).unwrap();
        sys::set_times(etc.as_fd(), &[old, old]).unwrap();
        let opened = Root::open(root.path()).unwrap();
        let mut stubs = opened.create_stub("/etc/hosts", StubKind::File).unwrap();
        stubs.extend(opened.create_stub("/run/cache/dir", StubKind::Directory).unwrap());
        stubs.extend(opened.create_stub("/etc", StubKind::Directory).unwrap());
        let paths: Vec<&str> = stubs.iter().map(|stub| stub.path.as_str()).collect();
        assert_eq!(paths, ["/etc/hosts", "/run", "/run/cache", "/run/cache/dir"]);
        assert!(root.path().join("etc/hosts").is_file());
        fs::write(root.path().join("run/cache/dir/kept"), "x").unwrap();
        let removed = opened.remove_stubs(&stubs);
        assert_eq!(removed, ["/etc/hosts"]);
        assert!(!root.path().join("etc/hosts").exists());
        assert_eq!(fs::metadata(root.path().join("etc")).unwrap().mtime(), 1_000_000);
        assert!(root.path().join("run/cache/dir/kept").exists());
    }

    #[test]
    fn created_directories_belong_to_the_owner() {
        let root = tempfile::tempdir().unwrap();
        let opened = Root::open(root.path()).unwrap();
        let created = opened.create_dir_all("/work/./src/", (0, 0)).unwrap();
        assert_eq!(created.iter().map(|stub| stub.path.as_str()).collect::<Vec<_>>(), ["/work", "/work/src"]);
        assert!(root.path().join("work/src").is_dir());
        assert!(opened.create_dir_all("/work/src", (0, 0)).unwrap().is_empty());
    }
}
