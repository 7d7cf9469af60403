//! Paths inside a root directory, as BuildKit sees the directories a client sends it: every
//! symlink on the way is followed inside the root (an absolute target starts again at the root,
//! `..` stops at it), so nothing outside the root is ever reached. Used for the context's files
//! and for the files read beside them (the Dockerfile in its directory, `.dockerignore`).

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// Linux's own limit on symlinks followed in one lookup.
pub const MAX_SYMLINKS: usize = 40;

/// Where a path leads inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InRoot {
    /// The real path relative to the root: no symlink in it, but possibly the last component
    /// when it was not to be followed.
    Found(String),
    Missing,
    /// `before_link` refused to follow the link at this path.
    Stopped(String),
    TooManyLinks,
}

/// Resolves the `/`-separated `path` inside `root`; the last component's link is followed only
/// when `follow_last`. `before_link` is asked before each link is followed, with the link's
/// path relative to the root; `false` stops there.
pub fn resolve(root: &Path, path: &str, follow_last: bool, before_link: &mut dyn FnMut(&str) -> bool) -> io::Result<InRoot> {
    let mut current: Vec<String> = Vec::new();
    let mut remaining: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut links_followed = 0;
    while let Some(part) = remaining.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                current.pop();
                continue;
            }
            _ => current.push(part),
        }
        let relative = current.join("/");
        let metadata = match fs::symlink_metadata(root.join(&relative)) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ENOTDIR) => {
                return Ok(InRoot::Missing);
            }
            Err(error) => return Err(error),
        };
        let is_last = remaining.iter().all(|part| part.is_empty() || part == ".");
        if metadata.file_type().is_symlink() && (!is_last || follow_last) {
            if !before_link(&relative) {
                return Ok(InRoot::Stopped(relative));
            }
            links_followed += 1;
            if links_followed > MAX_SYMLINKS {
                return Ok(InRoot::TooManyLinks);
            }
            let target = fs::read_link(root.join(&relative))?;
            let target = target.to_string_lossy();
            current.pop();
            if target.starts_with('/') {
                current.clear();
            }
            for part in target.split('/').rev() {
                remaining.push_front(part.to_string());
            }
        } else if !is_last && !metadata.is_dir() {
            return Ok(InRoot::Missing);
        }
    }
    Ok(InRoot::Found(current.join("/")))
}

/// Reads the regular file `name` of `root`, links followed inside the root; `None` when it is
/// not there (a link out of the root leads nowhere). A file larger than `limit` bytes, or one
/// that is not a regular file (a link to `/dev/zero` inside the root, a fifo), is an error
/// rather than a read without end.
pub fn read_file(root: &Path, name: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
    let real = match resolve(root, name, true, &mut |_| true)? {
        InRoot::Found(real) => root.join(real),
        InRoot::Missing | InRoot::Stopped(_) => return Ok(None),
        InRoot::TooManyLinks => return Err(io::Error::from_raw_os_error(libc::ELOOP)),
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
        assert_eq!(resolve(root, "lnk/x", false, &mut |_| false).unwrap(), InRoot::Missing);
        symlink("etc", root.join("dir")).unwrap();
        assert_eq!(resolve(root, "dir/passwd", false, &mut |_| false).unwrap(), InRoot::Stopped("dir".into()));
    }
}
