//! Paths inside a root directory, as BuildKit sees the directories a client sends it: every
//! symlink on the way is followed inside the root (an absolute target starts again at the root,
//! `..` stops at it), so nothing outside the root is ever reached. Used for the context's files
//! and for the files read beside them (the Dockerfile in its directory, `.dockerignore`). The
//! walk itself is the shared one of [`crate::oci::root_path`]; this module gives it the host's
//! directory as a tree.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::oci::root_path::{self, Kind, Resolution, Tree};

/// A directory of the host as a [`Tree`]: an entry is what `lstat` says of its path. Paths
/// that do not exist or lead through a non-directory (`ENOTDIR`) are missing; any other
/// failure is an error.
pub(crate) struct HostTree<'a>(pub(crate) &'a Path);

impl Tree for HostTree<'_> {
    type Entry = Kind;

    fn root(&self) -> io::Result<Kind> {
        // The root is not looked at: whatever it is, paths are resolved below it.
        Ok(Kind::Directory)
    }

    fn lookup(&self, _directory: &Kind, _name: &str, path: &str) -> io::Result<Option<Kind>> {
        match fs::symlink_metadata(self.0.join(path)) {
            Ok(metadata) if metadata.is_dir() => Ok(Some(Kind::Directory)),
            Ok(metadata) if metadata.file_type().is_symlink() => Ok(Some(Kind::Symlink)),
            Ok(_) => Ok(Some(Kind::Other)),
            Err(error) if error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn kind(&self, entry: &Kind) -> Kind {
        *entry
    }

    fn read_link(&self, _entry: &Kind, path: &str) -> io::Result<String> {
        Ok(fs::read_link(self.0.join(path))?.to_string_lossy().into_owned())
    }
}

/// Reads the regular file `name` of `root`, links followed inside the root; `None` when it is
/// not there (a link out of the root leads nowhere). A file larger than `limit` bytes, or one
/// that is not a regular file (a link to `/dev/zero` inside the root, a fifo), is an error
/// rather than a read without end.
pub fn read_file(root: &Path, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let real = match root_path::resolve(&HostTree(root), name, true)? {
        Resolution::Found { path, .. } => root.join(path),
        Resolution::Missing { .. } => return Ok(None),
        Resolution::Stopped(never) => match never {},
        Resolution::TooManyLinks => return Err(io::Error::from_raw_os_error(libc::ELOOP)),
    };
    read_limited(&real, limit).map(Some)
}

/// Reads a file the user named (a secret, a Dockerfile): a regular file of at most `limit`
/// bytes, else an error, never a read without end (`/dev/zero`, a fifo).
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let metadata = fs::metadata(path)?;
    if metadata.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::other(format!("larger than the limit of {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "inside\n").unwrap();
        fs::write(root.join("real"), "real\n").unwrap();
        symlink("real", root.join("relative")).unwrap();
        symlink("/etc/passwd", root.join("absolute")).unwrap();
        symlink("../../../../etc/hostname", root.join("climbing")).unwrap();
        symlink("/dev/zero", root.join("zero")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let read = |name: &str| read_file(root, name, 64);
        assert_eq!(read("relative").unwrap().unwrap(), b"real\n");
        assert_eq!(read("absolute").unwrap().unwrap(), b"inside\n", "an absolute link starts again at the root");
        assert_eq!(read("climbing").unwrap(), None, "`..` stops at the root");
        assert_eq!(read("zero").unwrap(), None, "/dev/zero is outside the root");
        assert!(read("loop").is_err());
        fs::write(root.join("big"), vec![b'x'; 65]).unwrap();
        assert!(read("big").unwrap_err().to_string().contains("limit"));
        assert!(read_limited(Path::new("/dev/zero"), 64).unwrap_err().to_string().contains("not a regular file"));
        let mut refuse = |link: &str| ControlFlow::Break(link.to_string());
        let resolve = |path: &str, before_link: &mut dyn FnMut(&str) -> ControlFlow<String>| {
            root_path::resolve_with(&HostTree(root), path, false, before_link).unwrap()
        };
        assert_eq!(resolve("lnk/x", &mut refuse), Resolution::Missing { path: "lnk/x".into() });
        symlink("etc", root.join("dir")).unwrap();
        assert_eq!(resolve("dir/passwd", &mut refuse), Resolution::Stopped("dir".into()));
    }
}
